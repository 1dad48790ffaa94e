//! Exit codes by kind of failure, decided in one place, so a script can tell "name taken" from
//! "server down" (issue 12).
//!
//! A failure that knows its kind carries a [`Classified`] error somewhere in its `anyhow` chain;
//! `main` asks [`exit_code`] for the number. Everything else exits 1. clap's own usage errors exit
//! 2 before any of this runs.

use reqwest::StatusCode;

/// The documented exit codes, as `--help` and README show them.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  any other failure (e.g. an answer from the server that fails the CLI's checks)
  2  usage: bad arguments, or the server refused a value (HTTP 400, 413, 415, 422)
  3  not found (HTTP 404)
  4  conflict: the name exists, a cap on live peers is reached, an org is not empty (HTTP 409),
     a file exists (use --force), or a server holds the data directory (sixpn restore)
  5  authentication: no credential, or the server refused it (HTTP 401, 403)
  6  unavailable: cannot connect, timed out, rate-limited or the server is failing (HTTP 429, 5xx)";

/// The kind of a failure, which decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Anything not listed below: exit 1.
    Other,
    /// Bad arguments, or a value the server refused: exit 2 (clap's code for usage errors).
    Usage,
    /// What was named does not exist: exit 3.
    NotFound,
    /// A name or file exists already, or a cap is reached (retrying does not help): exit 4.
    Conflict,
    /// No credential, or a refused one: exit 5.
    Auth,
    /// The server cannot be reached or cannot serve now; trying again later may help: exit 6.
    Unavailable,
}

impl Failure {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Failure::Other => 1,
            Failure::Usage => 2,
            Failure::NotFound => 3,
            Failure::Conflict => 4,
            Failure::Auth => 5,
            Failure::Unavailable => 6,
        }
    }

    /// The kind of an HTTP error status.
    pub fn from_status(status: StatusCode) -> Failure {
        match status.as_u16() {
            400 | 413 | 415 | 422 => Failure::Usage,
            401 | 403 => Failure::Auth,
            404 | 410 => Failure::NotFound,
            409 => Failure::Conflict,
            408 | 429 | 500..=599 => Failure::Unavailable,
            _ => Failure::Other,
        }
    }
}

/// An error that knows its [`Failure`] kind. Its message is the line the user sees.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Classified {
    /// The kind, which decides the exit code.
    pub failure: Failure,
    /// The one-line message.
    pub message: String,
}

/// An `anyhow` error of kind `failure` with `message`.
pub fn fail(failure: Failure, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Classified {
        failure,
        message: message.into(),
    })
}

/// The kind of an error: that of the outermost [`Classified`] error in its chain, or
/// [`Failure::Other`].
pub fn failure(err: &anyhow::Error) -> Failure {
    err.chain()
        .find_map(|e| e.downcast_ref::<Classified>())
        .map_or(Failure::Other, |c| c.failure)
}

/// The exit code for an error (see [`EXIT_CODES_HELP`]).
pub fn exit_code(err: &anyhow::Error) -> u8 {
    failure(err).code()
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn statuses_map_to_kinds() {
        let check = |status: u16, expect: Failure| {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(Failure::from_status(status), expect, "{status}");
        };
        check(400, Failure::Usage);
        check(422, Failure::Usage);
        check(401, Failure::Auth);
        check(403, Failure::Auth);
        check(404, Failure::NotFound);
        check(409, Failure::Conflict);
        check(429, Failure::Unavailable);
        check(500, Failure::Unavailable);
        check(503, Failure::Unavailable);
        check(418, Failure::Other);
    }

    #[test]
    fn codes_survive_context() {
        let err = fail(Failure::Conflict, "taken");
        assert_eq!(exit_code(&err), 4);
        let err = Err::<(), _>(err).context("outer").unwrap_err();
        assert_eq!(exit_code(&err), 4);
        assert_eq!(format!("{err:#}"), "outer: taken");
        assert_eq!(exit_code(&anyhow::anyhow!("plain")), 1);
        // Each documented code is listed in the help text.
        for failure in [
            Failure::Other,
            Failure::Usage,
            Failure::NotFound,
            Failure::Conflict,
            Failure::Auth,
            Failure::Unavailable,
        ] {
            assert!(EXIT_CODES_HELP.contains(&format!("\n  {}  ", failure.code())));
        }
    }
}
