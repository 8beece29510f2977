//! Chat: the event stream of the WebSocket.
