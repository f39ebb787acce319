//! Opening the redb files of a data dir (`playstate.redb`, `raft.redb`) so that a damaged
//! or vanished one stops the node with a message naming it, never starts it empty.
//!
//! redb trusts a file it closed cleanly and may panic on one altered since (a debug build
//! panics, `unreachable`, on the first bad page), and `Database::create` on a missing or
//! zero-length file makes a new empty database. So: every open verifies the checksums of
//! the whole file (one read pass, at start only), runs under `catch_unwind`, and a file is
//! created only when this data dir never held it — `data_dir/redb-files` lists the files
//! that were created in it.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use redb::{Builder, Database, DatabaseError, StorageError};

/// In the data dir: one file name a line, each a redb file this dir has held.
pub const HELD_LIST: &str = "redb-files";

/// Why a redb file of the data dir cannot be used. Each message is a whole sentence
/// naming the file, and for a damaged or vanished one what the operator can do.
#[derive(Debug, thiserror::Error)]
pub enum RedbFileError {
    #[error(
        "{} is empty (0 bytes): redb never leaves a file it created empty, so it was \
         truncated or its creation never finished; the node will not start with an \
         empty store in its place. {remedy}",
        path.display()
    )]
    Emptied { path: PathBuf, remedy: String },
    #[error(
        "{} is missing, but this data dir held it ({} lists it); the node will not \
         start with an empty store in its place. {remedy}",
        path.display(),
        list.display()
    )]
    Vanished {
        path: PathBuf,
        list: PathBuf,
        remedy: String,
    },
    /// `detail` is redb's own text (or its panic's), so the remedy can end the sentence.
    #[error(
        "{} is damaged ({detail}); the node will not start on it. {remedy}",
        path.display()
    )]
    Damaged {
        path: PathBuf,
        detail: String,
        remedy: String,
    },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: DatabaseError,
    },
    #[error("cannot create the tables of {}", path.display())]
    Init {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },
}

/// Opens `path`, or creates it when the data dir never held it; `init` (creating tables)
/// runs under the same guard. `loses` says what starting without the file gives up.
pub fn open(
    path: &Path,
    loses: &str,
    init: impl FnOnce(&Database) -> Result<(), redb::Error>,
) -> Result<Database, RedbFileError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let list = dir.join(HELD_LIST);
    let remedy = &remedy(path, loses);
    let held = read_held(&list).map_err(|source| RedbFileError::Read {
        path: list.clone(),
        source,
    })?;
    let exists = match std::fs::metadata(path) {
        Ok(meta) if meta.len() == 0 => {
            return Err(RedbFileError::Emptied {
                path: path.to_owned(),
                remedy: remedy.clone(),
            });
        }
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if held.contains(&name) {
                return Err(RedbFileError::Vanished {
                    path: path.to_owned(),
                    list,
                    remedy: remedy.clone(),
                });
            }
            false
        }
        Err(source) => {
            return Err(RedbFileError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let db = guarded(path, remedy, || {
        let mut builder = Builder::new();
        let db = if exists {
            builder.set_check_integrity_on_open(true).open(path)
        } else {
            builder.create(path)
        }
        .map_err(|e| describe(path, remedy, e))?;
        init(&db).map_err(|source| RedbFileError::Init {
            path: path.to_owned(),
            source,
        })?;
        Ok(db)
    })?;
    if !held.contains(&name) {
        // Also for a file that predates the list, so that its loss is noticed from now on.
        add_held(&list, held, name)
            .map_err(|source| RedbFileError::Write { path: list, source })?;
    }
    Ok(db)
}

/// What the operator can do about a damaged or vanished file that gives up `loses`.
pub fn remedy(path: &Path, loses: &str) -> String {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let list = path.parent().unwrap_or(Path::new(".")).join(HELD_LIST);
    format!(
        "Restore it from a backup, with the node stopped; or, to start without it and lose \
         {loses}, move it aside and delete the line `{name}` from {}.",
        list.display()
    )
}

/// The error for a failed open: a damaged file gets the remedy, a busy one does not.
fn describe(path: &Path, remedy: &str, e: DatabaseError) -> RedbFileError {
    match e {
        DatabaseError::Storage(StorageError::Corrupted(detail)) => damaged(path, remedy, &detail),
        DatabaseError::RepairAborted => damaged(path, remedy, "its repair failed"),
        source => RedbFileError::Open {
            path: path.to_owned(),
            source,
        },
    }
}

pub fn damaged(path: &Path, remedy: &str, detail: &str) -> RedbFileError {
    RedbFileError::Damaged {
        path: path.to_owned(),
        detail: detail.to_owned(),
        remedy: remedy.to_owned(),
    }
}

/// Runs `open` and turns a panic inside redb into an error naming the file. The default
/// panic message is held back meanwhile: the error says it all, in the node's log.
fn guarded<T>(
    path: &Path,
    remedy: &str,
    open: impl FnOnce() -> Result<T, RedbFileError>,
) -> Result<T, RedbFileError> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = catch_unwind(AssertUnwindSafe(open));
    std::panic::set_hook(hook);
    result.unwrap_or_else(|panic| Err(damaged(path, remedy, &panic_message(&*panic))))
}

/// What a caught panic said.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "redb panicked".to_owned())
}

fn read_held(list: &Path) -> io::Result<BTreeSet<String>> {
    match std::fs::read_to_string(list) {
        Ok(text) => Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(e),
    }
}

/// Rewrites the list with `name` added, durably (written, synced, renamed, dir synced).
fn add_held(list: &Path, mut held: BTreeSet<String>, name: String) -> io::Result<()> {
    held.insert(name);
    let tmp: PathBuf = list.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    for name in &held {
        writeln!(file, "{name}")?;
    }
    file.sync_all()?;
    std::fs::rename(&tmp, list)?;
    if let Some(dir) = list.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::TableDefinition;

    const T: TableDefinition<u32, u32> = TableDefinition::new("t");

    fn open_t(path: &Path) -> Result<Database, String> {
        open(path, "LOSES", |db| {
            let txn = db.begin_write()?;
            txn.open_table(T)?;
            Ok(txn.commit()?)
        })
        .map_err(|e| e.to_string())
    }

    fn filled(dir: &Path) -> PathBuf {
        let path = dir.join("s.redb");
        let db = open_t(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(T).unwrap();
            for i in 0..50_000 {
                t.insert(i, i).unwrap();
            }
        }
        txn.commit().unwrap();
        drop(db);
        path
    }

    #[test]
    fn a_held_file_that_vanished_or_was_emptied_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = filled(dir.path());
        assert!(open_t(&path).is_ok(), "a sound file opens");
        std::fs::File::create(&path).unwrap();
        let e = open_t(&path).err().unwrap();
        assert!(e.contains("s.redb is empty") && e.contains("LOSES"), "{e}");
        std::fs::remove_file(&path).unwrap();
        let e = open_t(&path).err().unwrap();
        assert!(
            e.contains("s.redb is missing") && e.contains(HELD_LIST),
            "{e}"
        );
    }

    #[test]
    fn a_file_damaged_in_the_middle_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = filled(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        for b in &mut bytes[middle..middle + 4096] {
            *b ^= 0xA5;
        }
        std::fs::write(&path, bytes).unwrap();
        let e = open_t(&path).err().unwrap();
        assert!(
            e.contains("s.redb is damaged") && e.contains("LOSES"),
            "{e}"
        );
    }
}
