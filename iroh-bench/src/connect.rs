//! Connect time and time to first byte over fresh connections, the modes interleaved connection by
//! connection.
//!
//! Each mode has one dialling endpoint that stays up, as an application's does; every sample is a new QUIC
//! connection (full handshake, no 0-RTT or session resumption) to the same server:
//!
//! - connect time: from the call to `connect` until the handshake is complete on the dialler's side;
//! - time to first byte: from the same start until the first byte of the server's answer to a one-byte
//!   request on a new stream has arrived (one more round trip after the handshake).
//!
//! A first connection per mode, not counted, settles the path (for the endpoint modes: the direct path
//! confirmed, or the relay alone in use).

use std::time::Instant;

use serde::Serialize;

use crate::{
    Result,
    setup::{Bed, Mode, push},
    sys::{median, quantile},
};

/// One mode's connect figures, milliseconds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ModeConnect {
    /// The mode.
    pub(crate) mode: Mode,
    /// Median connect time.
    pub(crate) connect_median_ms: f64,
    /// 90th percentile connect time.
    pub(crate) connect_p90_ms: f64,
    /// Median time to first byte.
    pub(crate) ttfb_median_ms: f64,
    /// 90th percentile time to first byte.
    pub(crate) ttfb_p90_ms: f64,
    /// Every connect time.
    pub(crate) connect_ms: Vec<f64>,
    /// Every time to first byte.
    pub(crate) ttfb_ms: Vec<f64>,
}

/// Measures `connects` fresh connections per bed, interleaved.
pub(crate) async fn measure(beds: &[Bed], connects: usize) -> Result<Vec<ModeConnect>> {
    let mut diallers = Vec::new();
    for bed in beds {
        let dialler = bed.dialler().await?;
        let conn = bed.connect(&dialler).await?;
        bed.settle(&dialler).await?;
        push(&conn, 1).await?;
        conn.close(0u32.into(), b"done");
        diallers.push(dialler);
    }
    let mut samples = vec![(Vec::new(), Vec::new()); beds.len()];
    for round in 0..connects {
        for offset in 0..beds.len() {
            let index = (round + offset) % beds.len();
            let (bed, dialler) = (&beds[index], &diallers[index]);
            let start = Instant::now();
            let conn = bed.connect(dialler).await?;
            let handshake = start.elapsed();
            push(&conn, 1).await?;
            let first_byte = start.elapsed();
            conn.close(0u32.into(), b"done");
            samples[index].0.push(handshake.as_secs_f64() * 1e3);
            samples[index].1.push(first_byte.as_secs_f64() * 1e3);
        }
    }
    for dialler in &diallers {
        dialler.close().await;
    }
    Ok(beds
        .iter()
        .zip(samples)
        .map(|(bed, (connect_ms, ttfb_ms))| ModeConnect {
            mode: bed.mode(),
            connect_median_ms: median(&connect_ms),
            connect_p90_ms: quantile(&connect_ms, 0.9),
            ttfb_median_ms: median(&ttfb_ms),
            ttfb_p90_ms: quantile(&ttfb_ms, 0.9),
            connect_ms,
            ttfb_ms,
        })
        .collect())
}
