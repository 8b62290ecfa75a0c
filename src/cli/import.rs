//! `cutover import-nginx`: convert an nginx config and write or print the result.

use std::path::Path;

use anyhow::{Context, bail};

use cutover::config::file::write_atomic;
use cutover::import::{self, ImportError};

const CONFIG_FILE: &str = "cutover.yaml";
const WEIGHTS_FILE: &str = "weights.yaml";

pub fn run(file: &Path, output: Option<&Path>, force: bool) -> anyhow::Result<()> {
    let imported = match import::import_file(file) {
        Ok(i) => i,
        Err(ImportError::NothingToRoute { report }) => {
            eprintln!("{report}");
            bail!("{}: {}", file.display(), ImportError::NothingToRoute { report: String::new() });
        }
        // Parse errors name their file and line already.
        Err(e) => bail!("{e}"),
    };
    match output {
        None => {
            print!(
                "# ===== {CONFIG_FILE} =====\n{}\n# ===== {WEIGHTS_FILE} =====\n{}",
                imported.config, imported.weights
            );
            eprint!("{}", imported.report());
        }
        Some(dir) => {
            let config = dir.join(CONFIG_FILE);
            let weights = dir.join(WEIGHTS_FILE);
            if !force {
                for path in [&config, &weights] {
                    if path.exists() {
                        bail!("{} already exists (use --force to overwrite it)", path.display());
                    }
                }
            }
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            // Weights first: a config is never left beside no weight file.
            for (path, text) in [(&weights, &imported.weights), (&config, &imported.config)] {
                write_atomic(path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
            }
            eprint!("{}", imported.report());
            eprintln!("\nwrote {} and {}", config.display(), weights.display());
            eprintln!("next: cutover check -c {}", config.display());
        }
    }
    Ok(())
}
