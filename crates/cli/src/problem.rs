//! Errors at the binary edge: every failure reads
//! `x0tta6bl4: <what> (<where>): <how to fix>`, followed by the chain of causes, and
//! maps to a documented exit code.

use std::fmt;
use std::process::ExitCode;

/// The documented exit codes (see `x0tta6bl4 --help`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 1: the command ran but did not achieve what was asked.
    Failure = 1,
    /// 2: bad usage or configuration.
    Usage = 2,
}

/// What went wrong, where, and how to fix it. Attached to an error chain as context;
/// the outermost one decides the exit code.
#[derive(Debug)]
pub struct Problem {
    /// What failed.
    pub what: String,
    /// Where: a file, an address, a node.
    pub place: String,
    /// How to fix it.
    pub fix: String,
    /// The exit code it maps to.
    pub exit: Exit,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.what)?;
        if !self.place.is_empty() {
            write!(f, " ({})", self.place)?;
        }
        if !self.fix.is_empty() {
            write!(f, ": {}", self.fix)?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

/// Build a [`Problem`].
pub fn problem(
    exit: Exit,
    what: impl Into<String>,
    place: impl fmt::Display,
    fix: impl Into<String>,
) -> Problem {
    Problem {
        what: what.into(),
        place: place.to_string(),
        fix: fix.into(),
        exit,
    }
}

/// Attach a [`Problem`] to an error.
pub trait ProblemExt<T> {
    /// Wrap the error with what failed, where and how to fix it.
    fn problem(
        self,
        exit: Exit,
        what: &str,
        place: impl fmt::Display,
        fix: &str,
    ) -> anyhow::Result<T>;
}

impl<T, E> ProblemExt<T> for Result<T, E>
where
    E: Into<anyhow::Error>,
{
    fn problem(
        self,
        exit: Exit,
        what: &str,
        place: impl fmt::Display,
        fix: &str,
    ) -> anyhow::Result<T> {
        self.map_err(|error| error.into().context(problem(exit, what, place, fix)))
    }
}

/// Print `error` as `x0tta6bl4: ...` with its causes on standard error and return the
/// exit code it maps to.
pub fn report(error: &anyhow::Error) -> ExitCode {
    eprintln!("{}", render(error));
    ExitCode::from(exit_of(error) as u8)
}

/// The exit code of an error: the outermost [`Problem`]'s, else failure.
pub fn exit_of(error: &anyhow::Error) -> Exit {
    error
        .downcast_ref::<Problem>()
        .map_or(Exit::Failure, |p| p.exit)
}

/// The text printed for an error: the first line, then one indented line per cause.
pub fn render(error: &anyhow::Error) -> String {
    let mut text = format!("x0tta6bl4: {error}");
    let mut previous = error.to_string();
    for cause in error.chain().skip(1) {
        let line = cause.to_string();
        // Library errors often repeat their source's text; print each text once.
        if line != previous && !previous.ends_with(&line) {
            for (index, part) in line.lines().enumerate() {
                let prefix = if index == 0 { "  caused by: " } else { "    " };
                text.push('\n');
                text.push_str(prefix);
                text.push_str(part);
            }
        }
        previous = line;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_where_fix_and_chain() {
        let inner: anyhow::Result<()> = Err(anyhow::anyhow!("line 3: unknown key `lisen`"));
        let error = inner
            .problem(
                Exit::Usage,
                "invalid node configuration",
                "node.toml",
                "fix the key named below",
            )
            .unwrap_err();
        assert_eq!(exit_of(&error), Exit::Usage);
        assert_eq!(
            render(&error),
            "x0tta6bl4: invalid node configuration (node.toml): fix the key named below\n  \
             caused by: line 3: unknown key `lisen`"
        );
    }

    #[test]
    fn plain_errors_are_failures() {
        let error = anyhow::anyhow!("boom");
        assert_eq!(exit_of(&error), Exit::Failure);
        assert_eq!(render(&error), "x0tta6bl4: boom");
    }

    #[test]
    fn outermost_problem_decides() {
        let inner: anyhow::Result<()> = Err(problem(Exit::Usage, "bad", "here", "fix").into());
        let error = inner
            .problem(Exit::Failure, "outer", "there", "retry")
            .unwrap_err();
        assert_eq!(exit_of(&error), Exit::Failure);
    }
}
