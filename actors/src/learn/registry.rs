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
    pub fn apply(&self, head: Head) -> Result<Applied, ModelError> {
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
        if let Some(dir) = &self.dir {
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
            match Head::load(&path).and_then(|head| self.apply(head)) {
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
