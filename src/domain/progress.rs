//! Watch progress of one user, buffered for write-behind.
//!
//! Updates are last-writer-wins and visible at once; the store sees only what is dirty at
//! flush time, so a player updating every 5 s costs one write per flush interval. BI wants
//! a `viewed` event when progress genuinely rose: rises within one flush window coalesce
//! into one event from the value before the first rise to the highest value reached; a
//! fall emits nothing.

use std::collections::HashMap;

use super::asset::AssetId;

/// Seconds into an asset.
pub type Seconds = u32;

/// A pending `viewed` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rise {
    pub from: Seconds,
    pub to: Seconds,
}

impl Rise {
    fn merge(self, later: Rise) -> Rise {
        Rise {
            from: self.from,
            to: self.to.max(later.to),
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Entry {
    /// What reads see; `None` once deleted (a tombstone until flushed).
    current: Option<Seconds>,
    /// Bumped by every change, so a flush can tell whether it wrote the latest.
    version: u64,
    dirty: bool,
    rise: Option<Rise>,
}

/// One write of a flush: the asset's value, or its deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgressWrite {
    pub asset: AssetId,
    pub seconds: Option<Seconds>,
    version: u64,
}

/// What one flush must store, and the events to emit once it is stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flush {
    pub writes: Vec<ProgressWrite>,
    pub viewed: Vec<(AssetId, Rise)>,
}

impl Flush {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.viewed.is_empty()
    }
}

#[derive(Clone, Debug, Default)]
pub struct ProgressBook {
    entries: HashMap<AssetId, Entry>,
    dirty: usize,
}

impl ProgressBook {
    /// A book holding what the store has, all clean.
    pub fn from_stored(stored: impl IntoIterator<Item = (AssetId, Seconds)>) -> ProgressBook {
        let entries = stored
            .into_iter()
            .map(|(asset, seconds)| {
                let entry = Entry {
                    current: Some(seconds),
                    ..Entry::default()
                };
                (asset, entry)
            })
            .collect();
        ProgressBook { entries, dirty: 0 }
    }

    pub fn get(&self, asset: &AssetId) -> Option<Seconds> {
        self.entries.get(asset).and_then(|e| e.current)
    }

    /// Every asset with progress, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (AssetId, Seconds)> + '_ {
        self.entries
            .iter()
            .filter_map(|(asset, e)| e.current.map(|s| (*asset, s)))
    }

    pub fn is_dirty(&self, asset: &AssetId) -> bool {
        self.entries.get(asset).is_some_and(|e| e.dirty)
    }

    /// Entries changed since they were last stored.
    pub fn dirty(&self) -> usize {
        self.dirty
    }

    /// The entries not yet stored, with their values (`None`: a deletion).
    pub fn dirty_entries(&self) -> Vec<(AssetId, Option<Seconds>)> {
        self.entries
            .iter()
            .filter(|(_, e)| e.dirty)
            .map(|(asset, e)| (*asset, e.current))
            .collect()
    }

    /// Records progress; returns whether the entry became dirty (it was clean before).
    pub fn set(&mut self, asset: AssetId, seconds: Seconds) -> bool {
        let entry = self.entries.entry(asset).or_default();
        let before = entry.current.unwrap_or(0);
        if seconds > before {
            let rise = Rise {
                from: before,
                to: seconds,
            };
            entry.rise = Some(entry.rise.map_or(rise, |pending| pending.merge(rise)));
        }
        entry.current = Some(seconds);
        Self::touch(entry, &mut self.dirty)
    }

    /// Clears progress; returns whether the entry became dirty. Clearing what does not
    /// exist changes nothing.
    pub fn delete(&mut self, asset: AssetId) -> bool {
        match self.entries.get_mut(&asset) {
            Some(entry) if entry.current.is_some() => {
                entry.current = None;
                Self::touch(entry, &mut self.dirty)
            }
            _ => false,
        }
    }

    fn touch(entry: &mut Entry, dirty: &mut usize) -> bool {
        entry.version += 1;
        let became_dirty = !entry.dirty;
        if became_dirty {
            entry.dirty = true;
            *dirty += 1;
        }
        became_dirty
    }

    /// Takes what must be stored now. Pending rises move into the flush; hand the flush
    /// back with `stored` or `failed`.
    pub fn take_flush(&mut self) -> Flush {
        let mut flush = Flush::default();
        for (asset, entry) in self.entries.iter_mut().filter(|(_, e)| e.dirty) {
            flush.writes.push(ProgressWrite {
                asset: *asset,
                seconds: entry.current,
                version: entry.version,
            });
            if let Some(rise) = entry.rise.take() {
                flush.viewed.push((*asset, rise));
            }
        }
        flush
    }

    /// The flush is stored: entries not changed since are clean. Returns how many became
    /// clean.
    pub fn stored(&mut self, flush: &Flush) -> usize {
        let mut cleaned = 0;
        for write in &flush.writes {
            let Some(entry) = self.entries.get_mut(&write.asset) else {
                continue;
            };
            if entry.version == write.version && entry.dirty {
                entry.dirty = false;
                cleaned += 1;
                if entry.current.is_none() && entry.rise.is_none() {
                    self.entries.remove(&write.asset);
                }
            }
        }
        self.dirty -= cleaned;
        cleaned
    }

    /// The flush was not stored: its rises go back, ahead of any newer ones, and its
    /// entries stay dirty for the next attempt.
    pub fn failed(&mut self, flush: Flush) {
        for (asset, rise) in flush.viewed {
            let entry = self.entries.entry(asset).or_default();
            entry.rise = Some(match entry.rise {
                Some(newer) => rise.merge(newer),
                None => rise,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asset(n: u8) -> AssetId {
        AssetId::parse(&format!("00000000-0000-4000-8000-0000000000{n:02}")).unwrap()
    }

    #[test]
    fn updates_are_visible_at_once_and_last_writer_wins() {
        let mut book = ProgressBook::default();
        book.set(asset(1), 10);
        book.set(asset(1), 5);
        assert_eq!(book.get(&asset(1)), Some(5));
        assert_eq!(book.iter().count(), 1);
    }

    #[test]
    fn a_hundred_updates_are_one_write() {
        let mut book = ProgressBook::default();
        let mut became_dirty = 0;
        for s in 1..=100 {
            became_dirty += usize::from(book.set(asset(1), s));
        }
        assert_eq!(became_dirty, 1);
        let flush = book.take_flush();
        assert_eq!(flush.writes.len(), 1);
        assert_eq!(flush.writes[0].seconds, Some(100));
        assert_eq!(book.stored(&flush), 1);
        assert_eq!(book.dirty(), 0);
        assert!(book.take_flush().is_empty());
    }

    #[test]
    fn rises_coalesce_and_falls_emit_nothing() {
        let mut book = ProgressBook::from_stored([(asset(1), 10)]);
        book.set(asset(1), 500);
        book.set(asset(1), 200);
        let flush = book.take_flush();
        assert_eq!(flush.viewed, vec![(asset(1), Rise { from: 10, to: 500 })]);
        assert_eq!(flush.writes[0].seconds, Some(200));
        book.stored(&flush);
        book.set(asset(1), 150);
        assert!(book.take_flush().viewed.is_empty());
    }

    #[test]
    fn a_first_value_rises_from_zero() {
        let mut book = ProgressBook::default();
        for s in [10, 500, 200] {
            book.set(asset(1), s);
        }
        assert_eq!(
            book.take_flush().viewed,
            vec![(asset(1), Rise { from: 0, to: 500 })]
        );
    }

    #[test]
    fn setting_the_same_value_is_dirty_but_not_a_rise() {
        let mut book = ProgressBook::from_stored([(asset(1), 10)]);
        assert!(book.set(asset(1), 10));
        let flush = book.take_flush();
        assert_eq!(flush.writes.len(), 1);
        assert!(flush.viewed.is_empty());
    }

    #[test]
    fn a_change_during_a_flush_keeps_the_entry_dirty() {
        let mut book = ProgressBook::default();
        book.set(asset(1), 10);
        let flush = book.take_flush();
        book.set(asset(1), 20);
        assert_eq!(book.stored(&flush), 0);
        assert_eq!(book.dirty(), 1);
        let next = book.take_flush();
        assert_eq!(next.writes[0].seconds, Some(20));
        assert_eq!(next.viewed, vec![(asset(1), Rise { from: 10, to: 20 })]);
    }

    #[test]
    fn a_failed_flush_is_retried_with_its_events() {
        let mut book = ProgressBook::default();
        book.set(asset(1), 10);
        let flush = book.take_flush();
        book.set(asset(1), 30);
        book.failed(flush);
        let retry = book.take_flush();
        assert_eq!(retry.writes[0].seconds, Some(30));
        assert_eq!(retry.viewed, vec![(asset(1), Rise { from: 0, to: 30 })]);
        assert_eq!(book.stored(&retry), 1);
        assert_eq!(book.dirty(), 0);
    }

    #[test]
    fn delete_is_a_tombstone_until_stored_and_deleting_nothing_is_free() {
        let mut book = ProgressBook::from_stored([(asset(1), 10)]);
        assert!(!book.delete(asset(2)));
        assert!(book.delete(asset(1)));
        assert_eq!(book.get(&asset(1)), None);
        let flush = book.take_flush();
        assert_eq!(flush.writes[0].seconds, None);
        book.stored(&flush);
        assert_eq!(book.iter().count(), 0);
        assert_eq!(book.dirty(), 0);
    }

    #[test]
    fn watching_then_clearing_still_reports_the_viewing() {
        let mut book = ProgressBook::from_stored([(asset(1), 10)]);
        book.set(asset(1), 900);
        book.delete(asset(1));
        let flush = book.take_flush();
        assert_eq!(flush.viewed, vec![(asset(1), Rise { from: 10, to: 900 })]);
        assert_eq!(flush.writes[0].seconds, None);
    }
}
