//! An error printed with its causes, for logs and for the one-line texts (HTTP bodies,
//! messages to other nodes) that flatten it.

use std::error::Error;
use std::fmt;

/// `error: cause: cause's cause…`, for errors whose message leaves their source out (as
/// this crate's do), so that each cause is printed once.
pub struct DisplayChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
