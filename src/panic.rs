//! Panics as located errors. fleet's own code does not panic on any input it was given, but a
//! dependency can (a template filter with an extreme argument, say): such a panic is caught
//! where it happened — a template render, a host's run — and reported as that task's or that
//! host's failure with the panic's message and location, never as a silent exit.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

/// A caught panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caught {
    /// Its message.
    pub message: String,
    /// Where it happened (`src/file.rs:12:5`), when known.
    pub location: Option<String>,
}

impl std::fmt::Display for Caught {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.location {
            Some(l) => write!(f, "internal error: panicked at {l}: {}", self.message),
            None => write!(f, "internal error: panicked: {}", self.message),
        }
    }
}

thread_local! {
    static LAST: RefCell<Option<Caught>> = const { RefCell::new(None) };
    static GUARDED: Cell<u32> = const { Cell::new(0) };
}

fn message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// Installs the hook that records each panic's message and location for [`catch`]; a panic
/// outside a guarded region is printed as before.
pub fn install() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let caught = Caught {
            message: crate::secret::mask(&message(info.payload())).into_owned(),
            location: info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column())),
        };
        LAST.with(|l| *l.borrow_mut() = Some(caught));
        if GUARDED.with(Cell::get) == 0 {
            default(info);
        }
    }));
}

fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, Caught> {
    GUARDED.with(|g| g.set(g.get() + 1));
    let r = catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(g.get().saturating_sub(1)));
    r.map_err(|payload| {
        LAST.with(|l| l.borrow_mut().take())
            .unwrap_or_else(|| Caught {
                message: message(payload.as_ref()),
                location: None,
            })
    })
}

/// Runs `f`; a panic inside it is returned as [`Caught`].
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, Caught> {
    guarded(f)
}

/// A future whose panics are returned as [`Caught`] instead of unwinding.
#[derive(Debug)]
pub struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> CatchUnwind<F> {
    /// Wraps a future.
    pub fn new(f: F) -> CatchUnwind<F> {
        CatchUnwind(Box::pin(f))
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Caught>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match guarded(move || inner.poll(cx)) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(c) => Poll::Ready(Err(c)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_a_located_error() {
        install();
        let e = catch(|| {
            let v: Vec<u8> = Vec::new();
            v[3]
        })
        .expect_err("panics");
        assert!(e.message.contains("index out of bounds"), "{e}");
        assert!(
            e.location
                .as_deref()
                .is_some_and(|l| l.contains("panic.rs")),
            "{e}"
        );
        assert_eq!(catch(|| 5), Ok(5));
    }

    #[test]
    fn a_panicking_future_becomes_an_error() {
        install();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let r = rt.block_on(CatchUnwind::new(async {
            tokio::task::yield_now().await;
            panic!("boom in a host");
        }));
        let e: Caught = r.expect_err("panics");
        assert_eq!(e.message, "boom in a host");
    }
}
