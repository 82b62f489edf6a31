//! Why something was tried again, beside the errors that say so (each port error maps
//! to one cause); the retry metric labels retries with it.

/// Why something was tried again: a closed set of label values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryCause {
    /// The store was busy: a lock, a WriteConflict, an election.
    StoreBusy,
    /// The store could not be reached or failed an I/O.
    StoreIo,
    SourceUnavailable,
    BrokerUnavailable,
    /// The broker did not confirm in time or the connection dropped mid-file.
    BrokerReconnect,
    Other,
}

impl RetryCause {
    pub fn label(self) -> &'static str {
        match self {
            RetryCause::StoreBusy => "store_busy",
            RetryCause::StoreIo => "store_io",
            RetryCause::SourceUnavailable => "source_unavailable",
            RetryCause::BrokerUnavailable => "broker_unavailable",
            RetryCause::BrokerReconnect => "broker_reconnect",
            RetryCause::Other => "other",
        }
    }
}
