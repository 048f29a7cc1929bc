//! Signals to the primary, mapped to intents in one place.
//!
//! The supervisor only sees [`Intent`]s on a channel, so tests and the library can drive it
//! without real signals.
//!
//! | signal            | intent                                   |
//! |-------------------|------------------------------------------|
//! | SIGTERM, SIGQUIT  | graceful stop                            |
//! | SIGINT            | graceful stop; the second one stops fast |

use std::io;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What the operator asks of the primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intent {
    /// Stop the cluster: `fast` kills workers at once instead of letting them drain.
    Stop { fast: bool },
}

/// Registers the signal handlers now and forwards signals as intents until `intents` closes.
pub fn forward_signals(intents: mpsc::UnboundedSender<Intent>) -> io::Result<JoinHandle<()>> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    Ok(tokio::spawn(async move {
        let mut interrupts = 0u32;
        loop {
            let intent = tokio::select! {
                Some(()) = terminate.recv() => Intent::Stop { fast: false },
                Some(()) = quit.recv() => Intent::Stop { fast: false },
                Some(()) = interrupt.recv() => {
                    interrupts += 1;
                    Intent::Stop { fast: interrupts > 1 }
                }
                else => return,
            };
            if intents.send(intent).is_err() {
                return;
            }
        }
    }))
}
