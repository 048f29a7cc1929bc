//! The control socket: how `herdsman status|reload|scale|restart|stop|logs|ls` (and `monit`)
//! talk to a running primary.
//!
//! - [`protocol`]: the JSON requests and replies, line by line.
//! - [`socket`]: the primary's end: the socket, its name lock and the peer check.
//! - `client`: the CLI's end: finding a cluster and asking it (feature `cli`).

#[cfg(feature = "cli")]
pub mod client;
pub mod protocol;
pub mod socket;
