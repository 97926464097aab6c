//! Progress of long runs, on stderr: on a terminal one line redrawn in place ("containers: 3
//! healthy, 2 starting"), otherwise one plain line per finished item (never redrawn, so logs stay
//! readable).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

/// Counts items that begin and end (possibly several at once).
pub struct Counter {
    /// What is counted, plural (`containers`).
    what: &'static str,
    /// The word for a finished item (`healthy`).
    done_word: &'static str,
    /// Plain lines when not on a terminal (else nothing is printed there).
    lines_off_terminal: bool,
    state: Mutex<(usize, usize, Option<usize>)>,
}

impl Counter {
    pub const fn new(
        what: &'static str,
        done_word: &'static str,
        lines_off_terminal: bool,
    ) -> Self {
        Counter {
            what,
            done_word,
            lines_off_terminal,
            state: Mutex::new((0, 0, None)),
        }
    }

    fn tty() -> bool {
        std::io::stderr().is_terminal()
    }

    /// Sets how many items there will be (shown as `done/total`).
    pub fn expect(&self, total: usize) {
        if let Ok(mut s) = self.state.lock() {
            *s = (0, 0, Some(total));
        }
    }

    pub fn begin(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.0 += 1;
            self.draw(&s, None);
        }
    }

    /// One item finished; `detail` goes on its plain line.
    pub fn end(&self, detail: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.1 += 1;
            self.draw(&s, Some(detail));
        }
    }

    /// Clears the redrawn line (a terminal), so that what follows starts clean.
    pub fn clear(&self) {
        if Self::tty() {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r\x1b[2K");
            let _ = e.flush();
        }
    }

    fn count(&self, s: &(usize, usize, Option<usize>)) -> String {
        let (begun, done, total) = *s;
        let running = begun.saturating_sub(done);
        match total {
            Some(t) => format!(
                "{}: {done}/{t} {}, {running} running",
                self.what, self.done_word
            ),
            None => format!(
                "{}: {done} {}, {running} starting",
                self.what, self.done_word
            ),
        }
    }

    fn draw(&self, s: &(usize, usize, Option<usize>), detail: Option<&str>) {
        let mut e = std::io::stderr().lock();
        if Self::tty() {
            let _ = write!(e, "\r\x1b[2K{}", self.count(s));
            let _ = e.flush();
        } else if let (Some(d), true) = (detail, self.lines_off_terminal) {
            let _ = writeln!(e, "{} ({d})", self.count(s));
        }
    }
}
