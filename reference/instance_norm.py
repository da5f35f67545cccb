"""Reference conditional instance norm: gather or mix (γ, β), textbook statistics, the affine."""


def conditional_instance_norm(x, weight, bias, style, eps=1e-5, activation=None):
    if style.dtype.is_floating_point:
        gamma, beta = style @ weight, style @ bias
    else:
        gamma, beta = weight[style], bias[style]
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), keepdim=True, unbiased=False)  # biased, eps inside the square root
    y = (x - mean) / (var + eps).sqrt() * gamma[:, :, None, None] + beta[:, :, None, None]
    return y.relu() if activation == "relu" else y
