//! What both floors share: their arguments (`LISTEN UPSTREAM [WORKERS]`),
//! and how they serve, as cutover does: one current-thread runtime per
//! worker, each accepting on its own `SO_REUSEPORT` socket.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

/// Serves every accepted connection with `serve(stream, peer, upstream)`
/// until a serving thread fails.
pub fn run<F, Fut>(name: &str, serve: F) -> std::io::Result<()>
where
    F: Fn(TcpStream, SocketAddr, SocketAddr) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: {name} LISTEN UPSTREAM [WORKERS]");
        std::process::exit(2);
    }
    let parse = |a: &str| a.parse::<SocketAddr>().unwrap_or_else(|e| panic!("invalid address {a:?}: {e}"));
    let listen = parse(&args[0]);
    let upstream = parse(&args[1]);
    let workers: usize = match args.get(2) {
        Some(n) => n.parse().unwrap_or_else(|e| panic!("invalid worker count {n:?}: {e}")),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let socket = reuseport_socket(listen)?;
            Ok(std::thread::spawn(move || serve_thread(socket, upstream, serve)))
        })
        .collect::<std::io::Result<_>>()?;
    for t in threads {
        t.join().expect("a serving thread panicked")?;
    }
    Ok(())
}

fn reuseport_socket(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

fn serve_thread<F, Fut>(socket: std::net::TcpListener, upstream: SocketAddr, serve: F) -> std::io::Result<()>
where
    F: Fn(TcpStream, SocketAddr, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = TcpListener::from_std(socket)?;
        loop {
            let (stream, peer) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio::spawn(serve(stream, peer, upstream));
        }
    })
}
