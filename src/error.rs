//! How an error and its causes are printed in one line.
//!
//! Errors in this crate keep their cause as `#[source]` and leave it out of their own
//! message, so a cause is printed exactly once: by [`chain`] in logs, by anyhow's `{:#}`
//! in `main`.

/// `error: cause: cause of the cause`, each message once.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        // Some foreign errors repeat their cause in their own message; print it once.
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot load models")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn every_cause_once() {
        let e = Outer(std::io::Error::other("models/LATEST: no such file"));
        assert_eq!(chain(&e), "cannot load models: models/LATEST: no such file");
    }
}
