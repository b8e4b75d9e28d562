//! A stage's background task, tied to its actor's state: aborted when the state is dropped,
//! whether the actor stopped or failed (ractor skips `post_stop` after a failure, and a
//! dropped `JoinHandle` alone would leave the task running).

use tokio::task::JoinHandle;

#[derive(Debug)]
pub struct StageTask(Option<JoinHandle<()>>);

impl StageTask {
    /// Spawns `future` on the runtime, owned by the returned value.
    pub fn spawn(future: impl Future<Output = ()> + Send + 'static) -> Self {
        Self(Some(tokio::spawn(future)))
    }

    /// Aborts the task and waits until it is gone (with what it held).
    pub async fn stop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for StageTask {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dropping_the_owner_ends_the_task() {
        let (held, mut gone) = tokio::sync::oneshot::channel::<()>();
        let task = StageTask::spawn(async move {
            let _held = held;
            std::future::pending::<()>().await;
        });
        drop(task);
        // The sender is dropped with the aborted task.
        assert!(
            tokio::time::timeout(std::time::Duration::from_secs(5), &mut gone)
                .await
                .is_ok_and(|r| r.is_err())
        );
    }
}
