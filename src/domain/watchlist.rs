//! A user's watchlist: a set of assets, each with the time it was added.

use std::collections::BTreeMap;

use super::asset::AssetId;
use super::time::Timestamp;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Watchlist {
    items: BTreeMap<AssetId, Timestamp>,
}

impl Watchlist {
    pub fn from_stored(items: impl IntoIterator<Item = (AssetId, Timestamp)>) -> Watchlist {
        Watchlist {
            items: items.into_iter().collect(),
        }
    }

    pub fn contains(&self, asset: &AssetId) -> bool {
        self.items.contains_key(asset)
    }

    /// Adds the asset; `false` if it was already there (its first `added_at` is kept).
    pub fn add(&mut self, asset: AssetId, added_at: Timestamp) -> bool {
        match self.items.entry(asset) {
            std::collections::btree_map::Entry::Occupied(_) => false,
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(added_at);
                true
            }
        }
    }

    /// Removes the asset; `false` if it was not there.
    pub fn remove(&mut self, asset: &AssetId) -> bool {
        self.items.remove(asset).is_some()
    }

    /// Oldest addition first.
    pub fn items(&self) -> Vec<(AssetId, Timestamp)> {
        let mut items: Vec<_> = self.items.iter().map(|(a, t)| (*a, *t)).collect();
        items.sort_by_key(|(asset, added)| (*added, *asset));
        items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asset(n: u8) -> AssetId {
        AssetId::parse(&format!("00000000-0000-4000-8000-0000000000{n:02}")).unwrap()
    }

    #[test]
    fn set_semantics_and_first_addition_wins() {
        let mut list = Watchlist::default();
        assert!(list.add(asset(2), Timestamp(20)));
        assert!(list.add(asset(1), Timestamp(30)));
        assert!(!list.add(asset(2), Timestamp(40)));
        assert_eq!(
            list.items(),
            vec![(asset(2), Timestamp(20)), (asset(1), Timestamp(30))]
        );
        assert!(list.remove(&asset(2)));
        assert!(!list.remove(&asset(2)));
        assert!(!list.contains(&asset(2)));
    }
}
