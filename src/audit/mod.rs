//! Audit: the write-ahead decision log. A trigger is forwarded only with an [`AuditTicket`],
//! which exists only once its `decision` record is durable.

pub mod file;
pub mod files;
pub mod record;
pub mod verify;

pub use file::FileLog;
pub use record::{CallerRef, Entry, Record};

/// Why the log could not be written (fail closed: 503).
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// Writing or syncing failed.
    #[error("{0}")]
    Io(String),
    /// The existing log cannot be continued.
    #[error("audit log is corrupt: {0}")]
    Corrupt(String),
}

/// Proof that the `decision` record of an allowed request is durable. Only
/// [`Audit::write_decision`] makes one.
#[derive(Debug)]
pub struct AuditTicket {
    seq: u64,
}

impl AuditTicket {
    /// Sequence number of the decision record.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

/// The audit stage.
#[derive(Clone)]
pub struct Audit {
    log: FileLog,
}

impl Audit {
    /// Wraps an open log.
    pub fn new(log: FileLog) -> Self {
        Self { log }
    }

    /// Whether the log is writable (readiness).
    pub fn is_healthy(&self) -> bool {
        self.log.is_healthy()
    }

    /// The log's path.
    pub fn path(&self) -> &std::path::Path {
        self.log.path()
    }

    /// Writes an `allow` decision and returns the ticket that lets the trigger be forwarded.
    /// The record is sealed by this call; the future waits for it to be durable.
    pub fn write_decision(
        &self,
        entry: &Entry<'_>,
    ) -> impl Future<Output = Result<AuditTicket, AuditError>> + Send + 'static + use<> {
        debug_assert_eq!(entry.decision, "allow");
        let durable = self.log.append(entry);
        async move {
            let seq = durable.await?;
            Ok(AuditTicket { seq })
        }
    }

    /// Writes any other record (denials, lists) and waits until it is durable. The record is
    /// sealed by this call.
    pub fn write(
        &self,
        entry: &Entry<'_>,
    ) -> impl Future<Output = Result<u64, AuditError>> + Send + 'static + use<> {
        self.log.append(entry)
    }

    /// Waits until every record submitted so far is durable (shutdown; tests).
    pub async fn flush(&self) -> Result<(), AuditError> {
        self.log.flush().await
    }

    /// Writes the outcome of a forwarded request with the next group commit, without waiting:
    /// the request's durable decision record already names what was forwarded
    /// (`execution_name`), so the answer need not wait for a second `fdatasync`.
    pub fn write_outcome(
        &self,
        _ticket: &AuditTicket,
        entry: &Entry<'_>,
    ) -> Result<u64, AuditError> {
        self.log.append_later(entry)
    }
}
