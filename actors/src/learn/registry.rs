//! The heads this replica knows, per scope, and which one of each scope is live.
//!
//! A scope is `global` or a camera group; each has its own versions. Newest version wins
//! within a scope: a head arriving from the heads topic, or promoted here, goes live when its
//! version is above its scope's live one. A rollback is itself a new version (a copy of the
//! earlier head's weights), so that the rule stays "newest wins" on every replica and a
//! compacted topic that keeps only the newest record per scope still converges.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use tessera_models::{Head, HeadMeta, ModelError};
use tessera_operators::scopes::{GLOBAL_SCOPE, validate_scope_name};
use tokio::sync::watch;

/// What [`HeadRegistry::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The head is live now (in its scope).
    Live,
    /// Kept, but an equal or newer version of its scope is live.
    Older,
    /// This version of this scope was known already: nothing changed.
    Known,
}

/// A head as `GET /v1/heads` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeadListing {
    #[serde(flatten)]
    pub meta: HeadMeta,
    pub live: bool,
}

/// The live head of every scope that has one: one value, swapped whole, so a reader sees
/// every scope as of one moment.
#[derive(Debug, Clone, Default)]
pub struct LiveHeads(Arc<BTreeMap<String, Arc<Head>>>);

impl LiveHeads {
    /// The live head of `scope` itself.
    pub fn get(&self, scope: &str) -> Option<&Arc<Head>> {
        self.0.get(scope)
    }

    /// The head that serves `scope`: its own, else the global one.
    pub fn serving(&self, scope: &str) -> Option<&Arc<Head>> {
        self.0.get(scope).or_else(|| self.0.get(GLOBAL_SCOPE))
    }

    /// Live version per scope.
    pub fn versions(&self) -> BTreeMap<String, u64> {
        self.0
            .iter()
            .map(|(scope, head)| (scope.clone(), head.version()))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Versions of every scope: scope, then version.
type Versions = BTreeMap<String, BTreeMap<u64, Arc<Head>>>;

/// The heads of one backbone.
#[derive(Debug)]
pub struct HeadRegistry {
    /// `sha256:<hex>` of the backbone every head must have been trained on.
    backbone: String,
    /// Size of the backbone's embeddings.
    embedding_dim: usize,
    /// Where versions are also written (`heads.dir`); `None`: memory and the heads topic only.
    dir: Option<PathBuf>,
    versions: Mutex<Versions>,
    /// The live heads; frames pin the value they see when they are consumed.
    live: watch::Sender<LiveHeads>,
}

impl HeadRegistry {
    pub fn new(backbone: String, embedding_dim: usize, dir: Option<PathBuf>) -> Arc<Self> {
        Arc::new(Self {
            backbone,
            embedding_dim,
            dir,
            versions: Mutex::new(BTreeMap::new()),
            live: watch::Sender::new(LiveHeads::default()),
        })
    }

    pub fn backbone(&self) -> &str {
        &self.backbone
    }

    pub fn embedding_dim(&self) -> usize {
        self.embedding_dim
    }

    /// The live heads of every scope, as of now.
    pub fn live_heads(&self) -> LiveHeads {
        self.live.borrow().clone()
    }

    /// The live head of `scope` itself, if any.
    pub fn live(&self, scope: &str) -> Option<Arc<Head>> {
        self.live.borrow().get(scope).cloned()
    }

    /// The head serving `scope`: its own, else the global one.
    pub fn serving(&self, scope: &str) -> Option<Arc<Head>> {
        self.live.borrow().serving(scope).cloned()
    }

    /// Version of the live head of `scope`, 0 before its first.
    pub fn live_version(&self, scope: &str) -> u64 {
        self.live.borrow().get(scope).map_or(0, |h| h.version())
    }

    /// Notified whenever another head goes live, in any scope.
    pub fn subscribe(&self) -> watch::Receiver<LiveHeads> {
        self.live.subscribe()
    }

    /// The version a head of `scope` trained now gets.
    pub fn next_version(&self, scope: &str) -> u64 {
        let newest = self
            .lock()
            .get(scope)
            .and_then(|versions| versions.keys().next_back().copied())
            .unwrap_or(0);
        newest.max(self.live_version(scope)) + 1
    }

    pub fn get(&self, scope: &str, version: u64) -> Option<Arc<Head>> {
        self.lock().get(scope)?.get(&version).cloned()
    }

    /// Every known version, by scope, oldest first.
    pub fn list(&self) -> Vec<HeadListing> {
        let live = self.live_heads();
        self.lock()
            .values()
            .flat_map(BTreeMap::values)
            .map(|head| HeadListing {
                meta: head.meta().clone(),
                live: live
                    .get(head.scope())
                    .is_some_and(|l| l.version() == head.version()),
            })
            .collect()
    }

    /// Scopes with at least one version.
    pub fn scopes(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Adds a head (refused if trained on another backbone); it goes live if it is the newest
    /// of its scope. It is also written to `heads.dir`, if set.
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
        validate_scope_name(head.scope()).map_err(|e| ModelError::InvalidHead {
            message: format!("head v{version}: {e}"),
            source: None,
        })?;
        let scope = head.scope().to_owned();
        let head = Arc::new(head);
        {
            let mut versions = self.lock();
            let of_scope = versions.entry(scope.clone()).or_default();
            if of_scope.contains_key(&version) {
                return Ok(Applied::Known);
            }
            of_scope.insert(version, head.clone());
        }
        if let Some(dir) = self.dir.as_ref().filter(|_| persist) {
            let path = dir.join(format!("head-{scope}-{version}.safetensors"));
            if let Err(error) = head.save(&path) {
                tracing::warn!(error = %error.detail(), path = %path.display(), "Could not write the head to disk");
            }
        }
        let mut went_live = false;
        self.live.send_if_modified(|live| {
            if live.get(&scope).is_none_or(|l| l.version() < version) {
                let mut heads = (*live.0).clone();
                heads.insert(scope.clone(), head.clone());
                *live = LiveHeads(Arc::new(heads));
                went_live = true;
            }
            went_live
        });
        if went_live {
            tracing::info!(
                %scope,
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

    /// A new version of `scope` holding the weights of its `version`, ready to publish: a
    /// rollback of that scope alone.
    pub fn restore(&self, scope: &str, version: u64) -> Result<Head, ModelError> {
        let earlier = self
            .get(scope, version)
            .ok_or_else(|| ModelError::InvalidHead {
                message: format!("no head version {version} of scope `{scope}` on this replica"),
                source: None,
            })?;
        let mut head = (*earlier).clone();
        let parent = self.live_version(scope);
        let meta = head.meta_mut();
        meta.parent = (parent > 0).then_some(parent);
        meta.restored_from = Some(version);
        meta.version = self.next_version(scope);
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

    fn lock(&self) -> MutexGuard<'_, Versions> {
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
        scoped(GLOBAL_SCOPE, version, backbone)
    }

    fn scoped(scope: &str, version: u64, backbone: &str) -> Result<Head, ModelError> {
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
        head.meta_mut().scope = scope.to_owned();
        Ok(head)
    }

    #[test]
    fn the_newest_version_goes_live_whatever_the_order() -> TestResult {
        let registry = HeadRegistry::new(BACKBONE.into(), 2, None);
        let live = registry.subscribe();
        assert_eq!(registry.apply(head(2, BACKBONE)?)?, Applied::Live);
        assert_eq!(registry.apply(head(1, BACKBONE)?)?, Applied::Older);
        assert_eq!(registry.apply(head(2, BACKBONE)?)?, Applied::Known);
        assert_eq!(registry.live_version(GLOBAL_SCOPE), 2);
        assert!(live.has_changed()?);
        assert_eq!(registry.next_version(GLOBAL_SCOPE), 3);
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
        assert_eq!(registry.live_version(GLOBAL_SCOPE), 0);
        assert!(registry.live(GLOBAL_SCOPE).is_none());
        Ok(())
    }

    #[test]
    fn a_rollback_is_a_new_version_with_the_old_weights() -> TestResult {
        let registry = HeadRegistry::new(BACKBONE.into(), 2, None);
        registry.apply(head(1, BACKBONE)?)?;
        registry.apply(head(2, BACKBONE)?)?;
        let restored = registry.restore(GLOBAL_SCOPE, 1)?;
        assert_eq!(restored.version(), 3);
        assert_eq!(restored.meta().restored_from, Some(1));
        assert_eq!(restored.meta().parent, Some(2));
        let probe = [0.3f32, 0.7];
        let original = registry.get(GLOBAL_SCOPE, 1).ok_or("version 1")?;
        assert_eq!(
            restored.probabilities(&probe)?,
            original.probabilities(&probe)?
        );
        assert_eq!(registry.apply(restored)?, Applied::Live);
        assert!(registry.restore(GLOBAL_SCOPE, 9).is_err());
        Ok(())
    }

    #[test]
    fn heads_written_to_the_folder_are_read_back() -> TestResult {
        let dir = tempfile::tempdir()?;
        let first = HeadRegistry::new(BACKBONE.into(), 2, Some(dir.path().to_path_buf()));
        first.apply(head(1, BACKBONE)?)?;
        first.apply(head(2, BACKBONE)?)?;
        std::fs::write(dir.path().join("head-global-9.safetensors"), b"garbage")?;
        first.apply(scoped("lot", 1, BACKBONE)?)?;
        let second = HeadRegistry::new(BACKBONE.into(), 2, Some(dir.path().to_path_buf()));
        assert_eq!(second.load_dir(), 3);
        assert_eq!(second.live_version("lot"), 1);
        assert_eq!(second.live_version(GLOBAL_SCOPE), 2);
        Ok(())
    }

    #[test]
    fn scopes_have_their_own_versions_and_fall_back_to_global() -> TestResult {
        let registry = HeadRegistry::new(BACKBONE.into(), 2, None);
        registry.apply(head(1, BACKBONE)?)?;
        assert_eq!(
            registry.serving("lot").map(|h| h.scope().to_owned()),
            Some(GLOBAL_SCOPE.to_owned())
        );
        // A scope's first version is 1 whatever the others have.
        assert_eq!(registry.next_version("lot"), 1);
        assert_eq!(registry.apply(scoped("lot", 1, BACKBONE)?)?, Applied::Live);
        assert_eq!(registry.apply(head(2, BACKBONE)?)?, Applied::Live);
        let live = registry.live_heads();
        assert_eq!(live.serving("lot").map(|h| h.scope()), Some("lot"));
        assert_eq!(live.serving("dock").map(|h| h.scope()), Some(GLOBAL_SCOPE));
        assert_eq!(
            live.versions(),
            BTreeMap::from([(GLOBAL_SCOPE.to_owned(), 2), ("lot".to_owned(), 1)])
        );
        // Rolling back one scope leaves the others as they were.
        registry.apply(scoped("lot", 2, BACKBONE)?)?;
        let restored = registry.restore("lot", 1)?;
        assert_eq!((restored.scope(), restored.version()), ("lot", 3));
        registry.apply(restored)?;
        assert_eq!(registry.live_version("lot"), 3);
        assert_eq!(registry.live_version(GLOBAL_SCOPE), 2);
        assert!(registry.restore("dock", 1).is_err());
        assert!(registry.apply(scoped("no/slash", 1, BACKBONE)?).is_err());
        assert_eq!(registry.list().iter().filter(|h| h.live).count(), 2);
        Ok(())
    }
}
