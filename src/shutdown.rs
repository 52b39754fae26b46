//! Turns SIGTERM and SIGINT into a stop request for the pass. Kubernetes stops
//! a Job's pod with SIGTERM; the pass finishes the call in flight, the report
//! is printed, and the process exits 143 (or 130 for SIGINT). A second signal
//! exits at once. After the run, while its metrics are pushed, the first
//! signal ends the push, and the process exits with the run's own code (see
//! [`Signals::after_run`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::warn;

use crate::exit::Stop;

/// The process's signals, listened to from [`listen`] on.
pub struct Signals {
    /// Turns `Some` on the first signal.
    stop: watch::Receiver<Option<Stop>>,
    /// Whether the run is over: a first signal then only ends the push.
    run_over: Arc<AtomicBool>,
}

/// Starts listening for signals. Must be called inside a tokio runtime.
pub fn listen() -> std::io::Result<Signals> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = watch::channel(None);
    let run_over = Arc::new(AtomicBool::new(false));
    let over = run_over.clone();
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
            // After the run, the push says what the signal did to it.
            if !over.load(Ordering::SeqCst) {
                warn!(signal = ?stop, "stopping after the call in flight");
            }
            let _ = tx.send(Some(stop));
        }
    });
    Ok(Signals { stop: rx, run_over })
}

impl Signals {
    /// The stop request the run watches.
    pub fn stop(&self) -> watch::Receiver<Option<Stop>> {
        self.stop.clone()
    }

    /// Marks the run over and resolves at the first signal after now (see
    /// [`after_now`]).
    pub fn after_run(self) -> impl Future<Output = Stop> {
        self.run_over.store(true, Ordering::SeqCst);
        after_now(self.stop)
    }
}

/// Resolves at the first signal after now, if none came yet; never if one
/// did, since the second signal exits the process without it (see
/// [`listen`]). Whether one came is read now, not when it is first polled.
fn after_now(mut stop: watch::Receiver<Option<Stop>>) -> impl Future<Output = Stop> {
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
