//! `gridchan vectors`: the signed-state test vectors, as published in specs/.

/// The vectors as JSON.
pub fn render() -> String {
    gridchan_channel::vectors::render()
}
