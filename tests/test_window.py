"""The shared window geometry of convolution-like ops (csrc/common/window.h): output sizes as torch's
convolutions compute them, and one error text for bad windows."""

import itertools

import pytest
import torch
import torch.nn.functional as F

import cvops


def output_size(input_hw, kernel, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    return cvops._C.window_output_size("window_test", *input_hw, *kernel, *stride, *padding, *dilation)


@pytest.mark.parametrize(
    "kernel,stride,padding,dilation", list(itertools.product((1, 3, 5), (1, 2, 3), (0, 1, 2), (1, 2)))
)
def test_output_size_is_torch_convolution_s(kernel, stride, padding, dilation):
    for height, width in ((kernel * dilation + 1, 9), (13, 7), (22, 22)):
        x = torch.zeros(1, 1, height, width)
        w = torch.zeros(1, 1, kernel, kernel)
        args = ((height, width), (kernel, kernel), (stride, stride), (padding, padding), (dilation, dilation))
        try:
            want = tuple(F.conv2d(x, w, stride=stride, padding=padding, dilation=dilation).shape[2:])
        except RuntimeError:  # torch refuses a kernel larger than the padded input: so does cvops
            with pytest.raises(RuntimeError, match="is larger than the padded input"):
                output_size(*args)
            continue
        assert output_size(*args) == want


def test_window_exactly_the_padded_input_gives_one_output():
    assert output_size((6, 6), (6, 6)) == (1, 1)
    assert output_size((4, 4), (6, 6), padding=(1, 1)) == (1, 1)
    assert output_size((3, 5), (2, 3), dilation=(2, 2)) == (1, 1)


@pytest.mark.parametrize(
    "args,message",
    [
        (((5, 5), (0, 3)), r"cvops.window_test: kernel size must be >= 1, got \(0, 3\)"),
        (((5, 5), (3, 3), (1, 0)), r"cvops.window_test: stride must be >= 1, got \(1, 0\)"),
        (((5, 5), (3, 3), (1, 1), (-1, 0)), r"cvops.window_test: padding must be >= 0, got \(-1, 0\)"),
        (((5, 5), (3, 3), (1, 1), (0, 0), (0, 1)), r"cvops.window_test: dilation must be >= 1, got \(0, 1\)"),
        (
            ((5, 5), (7, 3)),
            r"cvops.window_test: the kernel \(7 x 3 with dilation\) is larger than the padded input \(5 x 5\)",
        ),
        (
            ((5, 5), (3, 3), (1, 1), (0, 0), (3, 1)),
            r"the kernel \(7 x 3 with dilation\) is larger than the padded input",
        ),
    ],
)
def test_bad_windows_name_the_op_and_the_argument(args, message):
    with pytest.raises(RuntimeError, match=message):
        output_size(*args)
