//! How a long request (`reload`, `restart`) goes, as the supervisor tells whoever asked; the
//! control socket relays it as `progress` and `result` lines.

/// One step of a long request's answer: any number of `Progress`, then one `Done`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    /// For people: what happens now.
    Progress { message: String },
    /// The end: whether it succeeded, and a message for people.
    Done { ok: bool, message: String },
}
