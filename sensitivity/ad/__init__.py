"""The AD core: forward (tangent) mode, adjoint (reverse) mode, second order, and the cost
model that chooses between them. Free of I/O: it takes a `Problem` and returns arrays."""
