#![no_main]
//! The config loader: any text gives a config or errors, never a panic; and
//! for a config it accepts, the weight file `cutover shift` would write
//! loads back as the same table.

use std::path::Path;

use cutover::config::weight_file::{self, Comments};
use cutover::config::{Config, Weights};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse(Path::new("/nonexistent/cutover-fuzz/cutover.yaml"), text.to_string()) else {
        return;
    };
    let weights = Weights::all_stable(&config);
    let written = weight_file::render(&config, &weights, &Comments::default());
    match Weights::parse(&config.weights_path, &written, &config) {
        Ok(back) => assert_eq!(back, weights, "the weight file read back differently:\n{written}"),
        Err(e) => panic!("the weight file written for an accepted config does not load: {e}\n{written}"),
    }
});
