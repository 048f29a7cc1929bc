//! Signals to the primary, mapped to intents in one place.
//!
//! The supervisor only sees [`Intent`]s on a channel, so tests and the library can drive it
//! without real signals, and the control socket sends the same intents.
//!
//! | signal            | intent                                      |
//! |-------------------|---------------------------------------------|
//! | SIGTERM, SIGQUIT  | graceful stop                               |
//! | SIGINT            | graceful stop; the second one stops fast    |
//! | SIGHUP, SIGUSR2   | rolling reload, one slot at a time          |
//! | SIGTTIN, SIGTTOU  | one worker more, one fewer (gunicorn's way) |

use std::io;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Intent;
use crate::domain::ScaleTarget;

/// Registers the signal handlers now and forwards signals as intents until `intents` closes.
pub fn forward_signals(intents: mpsc::UnboundedSender<Intent>) -> io::Result<JoinHandle<()>> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut user2 = signal(SignalKind::user_defined2())?;
    let mut more = signal(SignalKind::from_raw(libc::SIGTTIN))?;
    let mut fewer = signal(SignalKind::from_raw(libc::SIGTTOU))?;
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
                Some(()) = hangup.recv() => Intent::Reload { parallel: 1, progress: None },
                Some(()) = user2.recv() => Intent::Reload { parallel: 1, progress: None },
                Some(()) = more.recv() => Intent::Scale { target: ScaleTarget::Add(1), progress: None },
                Some(()) = fewer.recv() => Intent::Scale { target: ScaleTarget::Remove(1), progress: None },
                else => return,
            };
            if intents.send(intent).is_err() {
                return;
            }
        }
    }))
}
