//! The `rose-standin` binary: the stand-in app on the ports of its command line (see the
//! library's docs for modes and the control API), until SIGTERM or Ctrl-C. It prints
//! `control on ADDR` and `listening on ADDR` on stdout once both ports listen.

use clap::Parser as _;
use rose_standin::{Args, bind};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let (bound, run) = match bind(&args).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("rose-standin: {e}");
            std::process::exit(1);
        }
    };
    if let Some(c) = bound.control {
        println!("control on {c}");
    }
    println!("listening on {}", bound.app);
    shutdown_on_signal(run).await;
}

async fn shutdown_on_signal(run: impl std::future::Future<Output = ()>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        run.await;
        return;
    };
    tokio::select! {
        _ = run => {}
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
