//! Congestion control: which of quinn's controllers a connection uses.
//!
//! [`CongestionControl`] names the choices; [`CongestionControl::factory`] is what
//! `quinn::TransportConfig::congestion_controller_factory` takes. The Endpoint's default transport config
//! ([`crate::endpoint::default_transport_config`]) uses [`CongestionControl::DEFAULT`]; an application that
//! wants another sets it on its own transport config:
//!
//! ```
//! use iroh_net::{congestion::CongestionControl, endpoint::default_transport_config};
//!
//! let mut transport = default_transport_config();
//! transport.congestion_controller_factory(CongestionControl::Cubic.factory());
//! // Endpoint::builder().transport_config(transport) ...
//! ```

pub mod model;
#[cfg(test)]
mod tests;

use std::{fmt, str::FromStr, sync::Arc};

use quinn::congestion::{BbrConfig, ControllerFactory, CubicConfig, NewRenoConfig};

pub use self::model::{HIGH_LOSS, MIN_RTT_WINDOW, Mode, Model, ModelConfig, ModelController};

/// A congestion controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CongestionControl {
    /// quinn's CUBIC (RFC 9438), quinn's own default: loss-based, every loss event cuts the window by 30%.
    Cubic,
    /// quinn's NewReno (RFC 9002's reference controller): loss-based, every loss halves the window.
    NewReno,
    /// quinn's BBR (version 1, marked experimental by quinn): model-based, paced by the measured bottleneck
    /// bandwidth and round-trip time; isolated random losses do not shrink its window.
    Bbr,
    /// This crate's model-based controller ([`ModelController`]): BBR's model (bottleneck bandwidth and
    /// propagation round trip from acknowledgements) driving a window of 1.2 x the bandwidth-delay product,
    /// so that random loss does not slow it and it keeps a router's queue short.
    Model,
}

impl CongestionControl {
    /// The controller the Endpoint uses unless its transport config says otherwise.
    pub const DEFAULT: Self = Self::Model;

    /// Every choice, in the order [`CongestionControl::name`]s are listed in help texts.
    pub const ALL: [Self; 4] = [Self::Cubic, Self::NewReno, Self::Bbr, Self::Model];

    /// The name [`FromStr`] takes: `cubic`, `new-reno`, `bbr`, `model`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cubic => "cubic",
            Self::NewReno => "new-reno",
            Self::Bbr => "bbr",
            Self::Model => "model",
        }
    }

    /// The factory for `quinn::TransportConfig::congestion_controller_factory`.
    pub fn factory(self) -> Arc<dyn ControllerFactory + Send + Sync> {
        match self {
            Self::Cubic => Arc::new(CubicConfig::default()),
            Self::NewReno => Arc::new(NewRenoConfig::default()),
            Self::Bbr => Arc::new(BbrConfig::default()),
            Self::Model => Arc::new(ModelConfig::default()),
        }
    }
}

impl Default for CongestionControl {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for CongestionControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name [`CongestionControl::from_str`] does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown congestion controller {0:?} (known: cubic, new-reno, bbr, model)")]
pub struct UnknownCongestionControl(pub String);

impl FromStr for CongestionControl {
    type Err = UnknownCongestionControl;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == s || (s == "newreno" && *c == Self::NewReno))
            .ok_or_else(|| UnknownCongestionControl(s.to_owned()))
    }
}
