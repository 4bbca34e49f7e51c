# The MLP activations besides the original's relu (which is fused with its
# product: linear.pxd's linear_relu_forward and relu_backward):
#   gelu(x) = x (1 + erf(x / sqrt 2)) / 2     relu2(x) = relu(x)^2     silu(x) = x / (1 + exp(-x))
#
# The forward pass turns fc1's output in hidden (R, F) into the activation, in
# place, and leaves each element's derivative in hidden_slope (R, F) (layout.pxd);
# the backward pass of each is then the same product by that slope. gelu and
# silu are activation.h's vector loops (erf from verf.h, exp from vexp.h);
# relu2 is a plain loop the compiler vectorizes.

from cython cimport floating

from layout cimport ACT_GELU, ACT_SILU

cdef extern from "activation.h" nogil:
    void mg_gelu_f32(float* h, float* slope, Py_ssize_t n)
    void mg_gelu_f64(double* h, double* slope, Py_ssize_t n)
    void mg_silu_f32(float* h, float* slope, Py_ssize_t n)
    void mg_silu_f64(double* h, double* slope, Py_ssize_t n)


cdef inline void relu2_forward(floating* h, floating* slope, Py_ssize_t n) noexcept nogil:
    """h = relu(h)^2 in place; slope = 2 relu(h) of the input."""
    cdef Py_ssize_t k
    cdef floating r
    for k in range(n):
        r = h[k] if h[k] > 0 else 0  # a select, so the loop vectorizes
        h[k] = r * r
        slope[k] = r + r


cdef inline void activation_forward(floating* h, floating* slope, Py_ssize_t n,
                                    int activation) noexcept nogil:
    """h (n,) = act(h) in place, slope (n,) = act'(h) at the same inputs, for
    activation ACT_GELU, ACT_RELU2 or ACT_SILU."""
    if activation == ACT_GELU:
        if floating is float:
            mg_gelu_f32(h, slope, n)
        else:
            mg_gelu_f64(h, slope, n)
    elif activation == ACT_SILU:
        if floating is float:
            mg_silu_f32(h, slope, n)
        else:
            mg_silu_f64(h, slope, n)
    else:
        relu2_forward(h, slope, n)


cdef inline void activation_backward(floating* dh, const floating* slope,
                                     Py_ssize_t n) noexcept nogil:
    """dh (n,) *= slope: the gradient of the activation's output becomes that of its input."""
    cdef Py_ssize_t k
    for k in range(n):
        dh[k] = dh[k] * slope[k]
