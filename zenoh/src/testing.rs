//! The wire format and key space, for tests that play a peer by hand
//! (hostile ones included). Not part of the supported API.

pub use crate::frame::{
    BadFrame, EndpointId, FRAME_COST, Frame, MessageHead, abort, close, close_ack, credit, data,
    decode, decode_hello, hello, open,
};
pub use crate::keys::{alive_key, new_id, port_key};
