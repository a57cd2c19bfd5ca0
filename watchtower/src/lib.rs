//! # gridchan-watchtower
//!
//! Not built yet (issue 5): the tower service and the client gateways use to hand it states.
//! The channel core already emits every new doubly signed state as
//! [`gridchan_channel::Output::Watchtower`], ready to be pushed to towers.
