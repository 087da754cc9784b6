//! Warnings: something the user should know that does not stop the
//! command (a symlink loop skipped, a run resumed on other data). Printed on
//! stderr as `warning: ...`, whatever the progress settings, so that nothing
//! surprising happens silently.

/// Print `message` as a warning on stderr.
pub fn warn(message: impl std::fmt::Display) {
    eprintln!("warning: {message}");
}
