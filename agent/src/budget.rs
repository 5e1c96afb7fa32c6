//! Byte budgets for documents in flight, so that the agent's memory depends on bytes, not on
//! document counts: a [`Budget`] of bytes all readers (or all `_bulk` senders) share, and the
//! [`PageSizer`] that sizes each slice's pages from the bytes per document it has seen.
//!
//! A page is counted from before it is asked for (at the size it is expected to have) until
//! its documents have left the agent (the archiver read them, or they were written to the
//! interim directory); a `_bulk` batch until its request ended. While a search answer is turned
//! into NDJSON both exist for a moment, so the memory they take is at most about twice the
//! budget.
//!
//! The budgets are constants: with the defaults below the agent's peak RSS stays within
//! 256 MiB for documents of 1 KB to 5 MB (`tests/tests/faults.rs`). `--page-size` and
//! `--batch-docs` still cap pages and batches by documents.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// One MiB.
pub const MIB: u64 = 1024 * 1024;

/// Bytes of one page of one slice, about.
pub const PAGE_BYTES: u64 = 8 * MIB;

/// Bytes of one `_bulk` request at most, unless one document alone is larger: well below the
/// servers' `http.max_content_length` (100mb by default).
pub const BATCH_BYTES: usize = 10 * MIB as usize;

/// Bytes of documents in flight over all slices of all indices, or over all `_bulk` requests.
pub const INFLIGHT_BYTES: u64 = 64 * MIB;

/// Documents asked for in a slice's first page. Not the index's average from `_stats`: that
/// is the stored, compressed size, which for repetitive documents is a small fraction of what
/// the answer holds; one document per slice costs one round trip and cannot be huge.
const FIRST_PAGE_DOCS: u32 = 1;

/// How much larger than the last one the next page may be: documents seen so far may be
/// smaller than the ones to come, so pages grow back step by step.
const GROWTH: u64 = 4;

/// Bytes of documents the agent may hold at once, shared by everyone who holds some.
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    used: Mutex<u64>,
    freed: Notify,
}

/// Bytes counted against a [`Budget`] until dropped.
#[derive(Debug)]
pub struct Held {
    budget: Arc<Budget>,
    bytes: u64,
}

impl Budget {
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit: limit.max(1),
            used: Mutex::new(0),
            freed: Notify::new(),
        })
    }

    /// The bytes held now.
    pub fn used(&self) -> u64 {
        *self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `bytes` fit. Anything fits when nothing is held, so that one document larger
    /// than the whole budget still goes through (alone).
    pub async fn take(self: &Arc<Self>, bytes: u64) -> Held {
        loop {
            // Registered before looking: a release in between still wakes us.
            let freed = self.freed.notified();
            {
                let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
                if *used == 0 || *used + bytes <= self.limit {
                    *used += bytes;
                    return Held {
                        budget: self.clone(),
                        bytes,
                    };
                }
            }
            freed.await;
        }
    }

    fn adjust(&self, from: u64, to: u64) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        *used = (*used + to).saturating_sub(from);
        drop(used);
        if to < from {
            self.freed.notify_waiters();
        }
    }
}

impl Held {
    /// What the holder turned out to hold. More is counted at once and never waited for (the
    /// bytes are here already; waiting could only deadlock), so the budget may be exceeded by
    /// pages larger than expected until they are released; less frees the rest.
    pub fn resize(&mut self, bytes: u64) {
        self.budget.adjust(self.bytes, bytes);
        self.bytes = bytes;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.adjust(self.bytes, 0);
    }
}

/// How pages are sized: at most `max_docs` documents (`--page-size`), about `page_bytes` per
/// page of one slice, and all pages in flight within `budget`.
#[derive(Clone, Debug)]
pub struct Paging {
    pub max_docs: u32,
    pub page_bytes: u64,
    pub budget: Arc<Budget>,
}

impl Paging {
    pub fn new(max_docs: u32, page_bytes: u64, inflight_bytes: u64) -> Self {
        Self {
            max_docs: max_docs.max(1),
            page_bytes: page_bytes.max(1),
            budget: Budget::new(inflight_bytes),
        }
    }

    /// A sizer for one slice, starting from a small page.
    pub fn sizer(&self) -> PageSizer {
        PageSizer {
            max_docs: self.max_docs,
            page_bytes: self.page_bytes,
            docs: FIRST_PAGE_DOCS.min(self.max_docs),
            doc_bytes: None,
        }
    }
}

/// The documents one slice asks for next: as many as fit in its page bytes at the size of the
/// documents of its last page, shrinking at once and growing at most [`GROWTH`]-fold a page.
#[derive(Clone, Debug)]
pub struct PageSizer {
    max_docs: u32,
    page_bytes: u64,
    docs: u32,
    /// Bytes per document of the last page that had any.
    doc_bytes: Option<u64>,
}

impl PageSizer {
    /// Documents to ask for.
    pub fn docs(&self) -> u32 {
        self.docs
    }

    /// The bytes the next page is expected to hold (a whole page's bytes before any was seen).
    pub fn expected_bytes(&self) -> u64 {
        match self.doc_bytes {
            Some(b) => b.saturating_mul(u64::from(self.docs)),
            None => self.page_bytes,
        }
    }

    /// Learns from a page of `docs` documents in `bytes`, read after asking for [`Self::docs`].
    pub fn observe(&mut self, docs: u64, bytes: u64) {
        if docs == 0 {
            return;
        }
        let doc_bytes = bytes.div_ceil(docs).max(1);
        self.doc_bytes = Some(doc_bytes);
        let grown = u64::from(self.docs).saturating_mul(GROWTH);
        self.docs = self.fitting(doc_bytes).min(grown).max(1) as u32;
    }

    /// The page size for a read that cannot change it later (a scroll), from a sample of
    /// `docs` documents in `bytes`: as many as fit, without growing step by step.
    pub fn settle(&mut self, docs: u64, bytes: u64) {
        if docs > 0 {
            let doc_bytes = bytes.div_ceil(docs).max(1);
            self.doc_bytes = Some(doc_bytes);
            self.docs = self.fitting(doc_bytes) as u32;
        }
    }

    /// Documents of `doc_bytes` that fit in a page, within 1..=max_docs.
    fn fitting(&self, doc_bytes: u64) -> u64 {
        (self.page_bytes / doc_bytes).clamp(1, u64::from(self.max_docs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_shrink_at_once_and_grow_back_step_by_step() {
        let paging = Paging::new(5000, 8 * MIB, 64 * MIB);
        let mut s = paging.sizer();
        assert_eq!((s.docs(), s.expected_bytes()), (1, 8 * MIB));
        // 1 KB documents: 1, 4, 16, ... up to --page-size.
        let mut seen = Vec::new();
        for _ in 0..8 {
            let n = u64::from(s.docs());
            s.observe(n, n * 1000);
            seen.push(s.docs());
        }
        assert_eq!(seen, [4, 16, 64, 256, 1024, 4096, 5000, 5000]);
        // 5 MB documents come: one a page at once.
        s.observe(5000, 5000 * 5_000_000);
        assert_eq!(s.docs(), 1);
        assert_eq!(s.expected_bytes(), 5_000_000);
        // 100 KB ones: as many as fit in 8 MiB.
        for _ in 0..4 {
            let n = u64::from(s.docs());
            s.observe(n, n * 100_000);
        }
        assert_eq!(s.docs(), 83);
        // An empty page teaches nothing; a scroll settles at once.
        s.observe(0, 0);
        assert_eq!(s.docs(), 83);
        let mut scroll = paging.sizer();
        scroll.settle(4, 4 * 1000);
        assert_eq!(scroll.docs(), 5000);
    }

    #[tokio::test]
    async fn budget_waits_for_bytes_and_lets_one_large_page_through() {
        let budget = Budget::new(10);
        let mut a = budget.take(6).await;
        let b = budget.take(4).await;
        assert_eq!(budget.used(), 10);
        // 1 more does not fit until something is released.
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.take(1).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        a.resize(2);
        let c = waiting.await.expect("taken");
        assert_eq!(budget.used(), 7);
        // Growing never waits, even beyond the limit.
        a.resize(20);
        assert_eq!(budget.used(), 25);
        drop((a, b, c));
        assert_eq!(budget.used(), 0);
        // Larger than the whole budget: alone.
        let big = budget.take(50).await;
        assert_eq!(budget.used(), 50);
        drop(big);
    }
}
