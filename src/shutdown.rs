//! Turns SIGTERM and SIGINT into a stop request for the pass. Kubernetes stops
//! a Job's pod with SIGTERM; the pass finishes the call in flight, the report
//! is printed, and the process exits 143 (or 130 for SIGINT). A second signal
//! exits at once. After the run, while its metrics are pushed, the first
//! signal ends the push, and the process exits with the run's own code (see
//! [`after_now`]).

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::warn;

use crate::exit::Stop;

/// Starts listening for signals; the receiver turns `Some` on the first one.
/// Must be called inside a tokio runtime.
pub fn listen() -> std::io::Result<watch::Receiver<Option<Stop>>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let stop = tokio::select! {
                _ = term.recv() => Stop::Sigterm,
                _ = int.recv() => Stop::Sigint,
            };
            if !first {
                warn!("second signal: exiting without waiting for the call in flight");
                let exit = stop.exit();
                std::process::exit(exit as i32);
            }
            first = false;
            warn!(signal = ?stop, "stopping after the call in flight");
            let _ = tx.send(Some(stop));
        }
    });
    Ok(rx)
}

/// Resolves at the first signal after now, if none came yet; never if one
/// did, since the second signal exits the process without it (see
/// [`listen`]). Whether one came is read now, not when it is first polled.
pub fn after_now(mut stop: watch::Receiver<Option<Stop>>) -> impl Future<Output = Stop> {
    let waits = stop.borrow_and_update().is_none();
    async move {
        if waits
            && stop.changed().await.is_ok()
            && let Some(signal) = *stop.borrow()
        {
            return signal;
        }
        std::future::pending().await
    }
}
