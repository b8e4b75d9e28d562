//! Progress of long commands (`detect`, `replay record | play | verify`) on stderr: a bar with
//! rate and ETA on a terminal, a plain line every few seconds otherwise (logs, CI), and a
//! summary line at the end either way.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a plain progress line is printed when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// Progress of one command over `total` items (unknown when `None`).
#[derive(Debug)]
pub struct Progress {
    what: String,
    unit: &'static str,
    total: Option<u64>,
    started: Instant,
    display: Display,
}

#[derive(Debug)]
enum Display {
    Bar(ProgressBar),
    Plain(Mutex<Plain>),
}

#[derive(Debug)]
struct Plain {
    done: u64,
    last_line: Instant,
}

impl Progress {
    /// A bar when stderr is a terminal, else plain lines.
    pub fn new(what: &str, unit: &'static str, total: Option<u64>) -> Self {
        Self::with_display(what, unit, total, std::io::stderr().is_terminal())
    }

    fn with_display(what: &str, unit: &'static str, total: Option<u64>, terminal: bool) -> Self {
        let started = Instant::now();
        let display = if terminal {
            let bar = match total {
                Some(total) => {
                    ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
                }
                None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
            };
            let template = match total {
                Some(_) => format!(
                    "{{prefix}} [{{bar:32.cyan/blue}}] {{pos}}/{{len}} {unit} {{per_sec}} ETA {{eta}} {{msg}}"
                ),
                None => format!("{{prefix}} {{spinner}} {{pos}} {unit} {{per_sec}} {{msg}}"),
            };
            if let Ok(style) = ProgressStyle::with_template(&template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(what.to_owned());
            bar.enable_steady_tick(Duration::from_millis(200));
            Display::Bar(bar)
        } else {
            Display::Plain(Mutex::new(Plain {
                done: 0,
                last_line: started,
            }))
        };
        Self {
            what: what.to_owned(),
            unit,
            total,
            started,
            display,
        }
    }

    /// Counts `n` more items done.
    pub fn inc(&self, n: u64) {
        match &self.display {
            Display::Bar(bar) => bar.inc(n),
            Display::Plain(plain) => {
                let Ok(mut plain) = plain.lock() else { return };
                plain.done += n;
                if plain.last_line.elapsed() >= PLAIN_EVERY {
                    plain.last_line = Instant::now();
                    eprintln!("{}", self.line(plain.done));
                }
            }
        }
    }

    /// A short note beside the bar (not shown in plain mode, where lines are periodic).
    pub fn note(&self, message: &str) {
        if let Display::Bar(bar) = &self.display {
            bar.set_message(message.to_owned());
        }
    }

    /// Prints a line without breaking the bar.
    pub fn println(&self, line: &str) {
        match &self.display {
            Display::Bar(bar) => bar.println(line),
            Display::Plain(_) => eprintln!("{line}"),
        }
    }

    /// Runs `f` (which prints to stdout) with the bar hidden, so the two do not mix.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.display {
            Display::Bar(bar) => bar.suspend(f),
            Display::Plain(_) => f(),
        }
    }

    /// Items done so far.
    pub fn done(&self) -> u64 {
        match &self.display {
            Display::Bar(bar) => bar.position(),
            Display::Plain(plain) => plain.lock().map_or(0, |p| p.done),
        }
    }

    /// Ends the display with a summary line: count, time and rate.
    pub fn finish(&self) -> String {
        let done = self.done();
        if let Display::Bar(bar) = &self.display {
            bar.finish_and_clear();
        }
        let elapsed = self.started.elapsed().as_secs_f64();
        let summary = format!(
            "{}: {done} {} in {elapsed:.1} s ({:.1}/s)",
            self.what,
            self.unit,
            rate(done, elapsed)
        );
        eprintln!("{summary}");
        summary
    }

    /// The plain progress line: done, share of the total, rate and ETA where known.
    fn line(&self, done: u64) -> String {
        let elapsed = self.started.elapsed().as_secs_f64();
        let per_sec = rate(done, elapsed);
        match self.total {
            Some(total) if total > 0 => {
                let eta = if per_sec > 0.0 {
                    format!(", ETA {:.0} s", total.saturating_sub(done) as f64 / per_sec)
                } else {
                    String::new()
                };
                format!(
                    "{}: {done}/{total} {} ({:.0}%), {per_sec:.1}/s{eta}",
                    self.what,
                    self.unit,
                    done as f64 * 100.0 / total as f64
                )
            }
            _ => format!("{}: {done} {}, {per_sec:.1}/s", self.what, self.unit),
        }
    }
}

fn rate(done: u64, elapsed_s: f64) -> f64 {
    if elapsed_s > 0.0 {
        done as f64 / elapsed_s
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_say_share_rate_and_eta() {
        let progress = Progress::with_display("detect", "images", Some(200), false);
        progress.inc(50);
        assert_eq!(progress.done(), 50);
        let line = progress.line(50);
        assert!(line.starts_with("detect: 50/200 images (25%), "), "{line}");
        assert!(line.contains("/s, ETA "), "{line}");
        let open_ended = Progress::with_display("record", "records", None, false);
        let line = open_ended.line(7);
        assert!(line.starts_with("record: 7 records, "), "{line}");
        assert!(!line.contains("ETA"), "{line}");
        assert!(progress.finish().starts_with("detect: 50 images in "));
    }
}
