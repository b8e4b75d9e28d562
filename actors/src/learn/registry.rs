//! The heads this replica knows, and which one is live.
//!
//! Newest version wins: a head arriving from the heads topic, or promoted here, goes live when
//! its version is above the live one. A rollback is itself a new version (a copy of the
//! earlier head's weights), so that the rule stays "newest wins" on every replica and a
//! compacted topic that keeps only the newest record per scope still converges.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use tessera_models::{Head, HeadMeta, ModelError};
use tokio::sync::watch;

/// What [`HeadRegistry::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The head is live now.
    Live,
    /// Kept, but an equal or newer version is live.
    Older,
    /// This version was known already: nothing changed.
    Known,
}

/// A head as `GET /v1/heads` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeadListing {
    #[serde(flatten)]
    pub meta: HeadMeta,
    pub live: bool,
}

/// The heads of one backbone.
#[derive(Debug)]
pub struct HeadRegistry {
    /// `sha256:<hex>` of the backbone every head must have been trained on.
    backbone: String,
    /// Size of the backbone's embeddings.
    embedding_dim: usize,
    /// Where versions are also written (`heads.dir`); `None`: memory and the heads topic only.
    dir: Option<PathBuf>,
    versions: Mutex<BTreeMap<u64, Arc<Head>>>,
    /// The live head; frames pin the value they see when they are consumed.
    live: watch::Sender<Option<Arc<Head>>>,
}

impl HeadRegistry {
    pub fn new(backbone: String, embedding_dim: usize, dir: Option<PathBuf>) -> Arc<Self> {
        Arc::new(Self {
            backbone,
            embedding_dim,
            dir,
            versions: Mutex::new(BTreeMap::new()),
            live: watch::Sender::new(None),
        })
    }

    pub fn backbone(&self) -> &str {
        &self.backbone
    }

    pub fn embedding_dim(&self) -> usize {
        self.embedding_dim
    }

    /// The live head, if any.
    pub fn live(&self) -> Option<Arc<Head>> {
        self.live.borrow().clone()
    }

    /// Version of the live head, 0 before the first.
    pub fn live_version(&self) -> u64 {
        self.live.borrow().as_ref().map_or(0, |h| h.version())
    }

    /// Notified whenever another head goes live.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Head>>> {
        self.live.subscribe()
    }

    /// The version a head trained now gets.
    pub fn next_version(&self) -> u64 {
        self.lock()
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .max(self.live_version())
            + 1
    }

    pub fn get(&self, version: u64) -> Option<Arc<Head>> {
        self.lock().get(&version).cloned()
    }

    /// Every known version, oldest first.
    pub fn list(&self) -> Vec<HeadListing> {
        let live = self.live_version();
        self.lock()
            .values()
            .map(|head| HeadListing {
                meta: head.meta().clone(),
                live: head.version() == live,
            })
            .collect()
    }

    /// Adds a head (refused if trained on another backbone); it goes live if it is the newest.
    /// It is also written to `heads.dir`, if set.
    pub fn apply(&self, head: Head) -> Result<Applied, ModelError> {
        self.insert(head, true)
    }

    fn insert(&self, head: Head, persist: bool) -> Result<Applied, ModelError> {
        head.check_backbone(&self.backbone, self.embedding_dim)?;
        let version = head.version();
        if version == 0 {
            return Err(ModelError::InvalidHead {
                message: "version 0 is not a head version".into(),
                source: None,
            });
        }
        let head = Arc::new(head);
        {
            let mut versions = self.lock();
            if versions.contains_key(&version) {
                return Ok(Applied::Known);
            }
            versions.insert(version, head.clone());
        }
        if let Some(dir) = self.dir.as_ref().filter(|_| persist) {
            let path = dir.join(format!("head-{version}.safetensors"));
            if let Err(error) = head.save(&path) {
                tracing::warn!(error = %error.detail(), path = %path.display(), "Could not write the head to disk");
            }
        }
        let mut went_live = false;
        self.live.send_if_modified(|live| {
            if live.as_ref().is_none_or(|l| l.version() < version) {
                *live = Some(head.clone());
                went_live = true;
            }
            went_live
        });
        if went_live {
            tracing::info!(
                version,
                parent = ?head.meta().parent,
                classes = head.classes().len(),
                "Head live"
            );
            Ok(Applied::Live)
        } else {
            Ok(Applied::Older)
        }
    }

    /// A new version holding the weights of `version`, ready to publish: a rollback.
    pub fn restore(&self, version: u64) -> Result<Head, ModelError> {
        let earlier = self.get(version).ok_or_else(|| ModelError::InvalidHead {
            message: format!("no head version {version} on this replica"),
            source: None,
        })?;
        let mut head = (*earlier).clone();
        let meta = head.meta_mut();
        meta.parent = Some(self.live_version());
        meta.restored_from = Some(version);
        meta.version = self.next_version();
        Ok(head)
    }

    /// Loads the versions in `heads.dir`, if any (a replica's own copy; the heads topic is
    /// the shared one). Unreadable files and other backbones' heads are skipped with a warning.
    pub fn load_dir(&self) -> usize {
        let Some(dir) = &self.dir else {
            return 0;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        let mut loaded = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "safetensors") {
                continue;
            }
            // Read from the folder: nothing to write back.
            match Head::load(&path).and_then(|head| self.insert(head, false)) {
                Ok(_) => loaded += 1,
                Err(error) => {
                    tracing::warn!(error = %error.detail(), path = %path.display(), "Head file skipped");
                }
            }
        }
        loaded
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Head>>> {
        self.versions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_models::{Example, TrainSettings};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const BACKBONE: &str = "sha256:backbone";

    fn head(version: u64, backbone: &str) -> Result<Head, ModelError> {
        let embeddings = [[1.0f32, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]];
        let examples: Vec<Example<'_>> = embeddings
            .iter()
            .enumerate()
            .map(|(i, e)| Example {
                embedding: e,
                class: i % 2,
            })
            .collect();
        let settings = TrainSettings {
            steps: 5,
            ..TrainSettings::default()
        };
        let mut head = Head::train(
            vec!["a".into(), "b".into()],
            &examples,
            2,
            backbone.into(),
            &settings,
        )?;
        head.meta_mut().version = version;
        Ok(head)
    }

    #[test]
    fn the_newest_version_goes_live_whatever_the_order() -> TestResult {
        let registry = HeadRegistry::new(BACKBONE.into(), 2, None);
        let live = registry.subscribe();
        assert_eq!(registry.apply(head(2, BACKBONE)?)?, Applied::Live);
        assert_eq!(registry.apply(head(1, BACKBONE)?)?, Applied::Older);
        assert_eq!(registry.apply(head(2, BACKBONE)?)?, Applied::Known);
        assert_eq!(registry.live_version(), 2);
        assert!(live.has_changed()?);
        assert_eq!(registry.next_version(), 3);
        let listed: Vec<(u64, bool)> = registry
            .list()
            .iter()
            .map(|h| (h.meta.version, h.live))
            .collect();
        assert_eq!(listed, vec![(1, false), (2, true)]);
        Ok(())
    }

    #[test]
    fn another_backbones_head_and_version_zero_are_refused() -> TestResult {
        let registry = HeadRegistry::new(BACKBONE.into(), 2, None);
        let error = registry
            .apply(head(1, "sha256:other")?)
            .err()
            .ok_or("a foreign head was applied")?;
        assert!(error.to_string().contains("sha256:other"), "{error}");
        assert!(registry.apply(head(0, BACKBONE)?).is_err());
        assert_eq!(registry.live_version(), 0);
        assert!(registry.live().is_none());
        Ok(())
    }

    #[test]
    fn a_rollback_is_a_new_version_with_the_old_weights() -> TestResult {
        let registry = HeadRegistry::new(BACKBONE.into(), 2, None);
        registry.apply(head(1, BACKBONE)?)?;
        registry.apply(head(2, BACKBONE)?)?;
        let restored = registry.restore(1)?;
        assert_eq!(restored.version(), 3);
        assert_eq!(restored.meta().restored_from, Some(1));
        assert_eq!(restored.meta().parent, Some(2));
        let probe = [0.3f32, 0.7];
        let original = registry.get(1).ok_or("version 1")?;
        assert_eq!(
            restored.probabilities(&probe)?,
            original.probabilities(&probe)?
        );
        assert_eq!(registry.apply(restored)?, Applied::Live);
        assert!(registry.restore(9).is_err());
        Ok(())
    }

    #[test]
    fn heads_written_to_the_folder_are_read_back() -> TestResult {
        let dir = tempfile::tempdir()?;
        let first = HeadRegistry::new(BACKBONE.into(), 2, Some(dir.path().to_path_buf()));
        first.apply(head(1, BACKBONE)?)?;
        first.apply(head(2, BACKBONE)?)?;
        std::fs::write(dir.path().join("head-9.safetensors"), b"garbage")?;
        let second = HeadRegistry::new(BACKBONE.into(), 2, Some(dir.path().to_path_buf()));
        assert_eq!(second.load_dir(), 2);
        assert_eq!(second.live_version(), 2);
        Ok(())
    }
}
