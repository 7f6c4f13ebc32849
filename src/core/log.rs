//! Log lines the core produces, for the adapter to hand to the host's logger.
//!
//! The core never logs by itself: it queues [`LogLine`]s in a [`Log`] lent to each event,
//! and the adapter drains them after the event. Nothing secret is ever queued.

/// Severity, as proxy-wasm (and Envoy's dynamic modules) number them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: Level,
    pub message: String,
}

/// Lines queued during one event.
#[derive(Debug, Default)]
pub struct Log(Vec<LogLine>);

impl Log {
    pub fn push(&mut self, level: Level, message: impl Into<String>) {
        self.0.push(LogLine { level, message: message.into() });
    }

    pub fn drain(&mut self) -> std::vec::Drain<'_, LogLine> {
        self.0.drain(..)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a queued line contains `needle` (tests).
    pub fn contains(&self, needle: &str) -> bool {
        self.0.iter().any(|l| l.message.contains(needle))
    }
}
