//! A small blocking HTTP client for the endpoint tests (ureq, run off the async threads).

use std::time::{Duration, Instant};

/// One answer: status code and body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// Sends `method url` (with `Authorization: Bearer token` when given). `None` when nothing
/// answered (connection refused, reset).
pub async fn request(
    method: &str,
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<Option<Answer>> {
    request_with_body(method, url, token, None).await
}

/// [`request`] with a JSON body for a POST.
pub async fn request_with_body(
    method: &str,
    url: &str,
    token: Option<&str>,
    json: Option<String>,
) -> anyhow::Result<Option<Answer>> {
    let (method, url, token) = (method.to_owned(), url.to_owned(), token.map(str::to_owned));
    let answer = tokio::task::spawn_blocking(move || -> Option<Answer> {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .new_agent();
        let authorization = token.map(|t| format!("Bearer {t}"));
        let response = match method.as_str() {
            "POST" => {
                let mut request = agent.post(&url);
                if let Some(value) = &authorization {
                    request = request.header("Authorization", value);
                }
                match json {
                    Some(body) => request
                        .header("Content-Type", "application/json")
                        .send(body),
                    None => request.send_empty(),
                }
            }
            _ => {
                let mut request = agent.get(&url);
                if let Some(value) = &authorization {
                    request = request.header("Authorization", value);
                }
                request.call()
            }
        };
        let mut response = response.ok()?;
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().ok()?;
        Some(Answer { status, body })
    })
    .await?;
    Ok(answer)
}

/// GETs `url` until `done` holds for the answer or `timeout` passes; returns the last answer.
pub async fn get_until(
    url: &str,
    timeout: Duration,
    done: impl Fn(&Answer) -> bool,
) -> anyhow::Result<Answer> {
    let deadline = Instant::now() + timeout;
    loop {
        let answer = request("GET", url, None).await?;
        match answer {
            Some(answer) if done(&answer) => return Ok(answer),
            answer if Instant::now() >= deadline => {
                return answer.ok_or_else(|| anyhow::anyhow!("{url}: no answer"));
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
