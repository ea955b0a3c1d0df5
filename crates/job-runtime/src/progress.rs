//! Progress display for long interactive runs (only when stderr is a terminal).

use std::io::IsTerminal;

/// A progress bar over a known amount of work; absent when not on a terminal.
pub struct Progress(indicatif::ProgressBar);

impl Progress {
    /// A bar for `total` units of `unit`, or None when stderr is not a terminal (logs then).
    pub fn for_terminal(total: u64, unit: &str) -> Option<Self> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = indicatif::ProgressBar::new(total);
        let template = format!("{{elapsed_precise}} [{{bar:40}}] {{human_pos}}/{{human_len}} {unit} ({{per_sec}}, eta {{eta}})");
        bar.set_style(indicatif::ProgressStyle::with_template(&template).unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
        Some(Self(bar))
    }

    /// Sets the amount done.
    pub fn set(&self, done: u64) {
        self.0.set_position(done);
    }

    /// Removes the bar.
    pub fn finish(self) {
        self.0.finish_and_clear();
    }
}
