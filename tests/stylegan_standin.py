"""A stand-in for an official StyleGAN checkout and its network pickles, for tests.

``write_standin_repo`` writes a small Python tree with the official layout and
interfaces (``legacy.load_network_pkl``, ``dnnlib``, ``torch_utils.persistence``,
``torch_utils.ops.bias_act``) and a tiny deterministic generator with the official
attribute names and call signatures:

* ``G.z_dim, G.c_dim, G.w_dim, G.num_ws, G.img_resolution, G.img_channels``;
* ``G.mapping(z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False)``
  -> ws [B, num_ws, w_dim]; the class enters as ``embed(c.argmax(1))`` in "xl" (as in
  StyleGAN-XL) and as a fully connected ``embed(c)`` of the float label vector in "sg3" and
  "global" (StyleGAN3, StyleGAN2-ADA); ``mapping.w_avg`` is [c_dim, w_dim] ("xl") or [w_dim]
  ("sg3", "global");
* ``G.synthesis(ws, noise_mode=..., force_fp32=...)`` -> [B, 3, res, res] in [-1, 1].
  "xl" and "sg3" follow StyleGAN3 / StyleGAN-XL: children ``input``, ``L0_<size>_<ch>``, ...,
  each map ``sampling_rate`` pixels across plus ``margin_size`` pixels on every side
  (attributes ``size``/``sampling_rate`` on the input, ``in_size``/``out_size``/
  ``in_sampling_rate``/``out_sampling_rate``/``conv_kernel`` on layers), the last two
  layers at ``img_resolution`` without margin. "global" follows StyleGAN2-ADA: children
  ``b4``, ``b8``, ... returning ``(x, img)``, with per-pixel noise (``noise_mode``).

Networks are ``torch_utils.persistence`` classes, so a pickle carries the source of
``training/networks.py``, and unpickling execs it: that needs the checkout on
``sys.path`` (it imports ``dnnlib``, ``torch_utils`` and ``legacy``), like the real
thing. ``write_standin_pickle`` builds the networks in a separate Python process, so
the test process has never imported them (as with a downloaded pickle); with
``with_broken_discriminator`` the discriminator's module imports a package that exists
only in that process (as StyleGAN-XL's D imports timm), so unpickling it raises
ModuleNotFoundError.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Literal

STANDIN_URL = "https://example.invalid/standin-models/standin-xl-32.pkl"
MISSING_DEPENDENCY = "standin_missing_dependency"

_README = f"""# Stand-in StyleGAN checkout (tests only)

Pretrained networks (not real): [standin-xl-32.pkl]({STANDIN_URL})
"""

_LEGACY = '''"""Stand-in legacy.py: read a network pickle into a dict."""

import io
import pickle

import torch

import dnnlib  # noqa: F401
from torch_utils import misc  # noqa: F401


def load_network_pkl(f, force_fp16=False):
    data = _LegacyUnpickler(f).load()
    if not isinstance(data, dict):
        raise ValueError("not a network pickle")
    data.setdefault("training_set_kwargs", None)
    data.setdefault("augment_pipe", None)
    for key in ("G", "D", "G_ema"):  # StyleGAN3 checks all three
        assert isinstance(data[key], torch.nn.Module), key
    return data


class _LegacyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "torch.storage" and name == "_load_from_bytes":
            return lambda b: torch.load(io.BytesIO(b), map_location="cpu")
        return super().find_class(module, name)
'''

_DNNLIB_INIT = '''from .util import EasyDict
'''

_DNNLIB_UTIL = '''class EasyDict(dict):
    """A dict whose items are also attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value

    def __delattr__(self, name):
        del self[name]
'''

_MISC = '''def assert_shape(tensor, ref_shape):
    if tensor.ndim != len(ref_shape):
        raise AssertionError(f"wrong number of dimensions: got {tensor.ndim}, expected {len(ref_shape)}")
    for idx, (size, ref) in enumerate(zip(tensor.shape, ref_shape)):
        if ref is not None and size != ref:
            raise AssertionError(f"wrong size for dimension {idx}: got {size}, expected {ref}")
'''

_PERSISTENCE = '''"""Stand-in torch_utils.persistence: instances pickle with their module's source.

Unpickling calls _reconstruct_persistent_obj(meta), which execs that source into a
fresh module (registered before the exec, as the official code does) and restores
the instance's state into the class of that name.
"""

import copy
import inspect
import sys
import types
import uuid

_version = 6
_decorators = set()
_module_to_src_dict = {}
_src_to_module_dict = {}


def persistent_class(orig_class):
    if orig_class in _decorators:
        return orig_class
    module = sys.modules[orig_class.__module__]
    src = _module_to_src(module)

    class Decorator(orig_class):
        _orig_module_src = src
        _orig_class_name = orig_class.__name__

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._init_args = copy.deepcopy(args)
            self._init_kwargs = copy.deepcopy(kwargs)

        def __reduce__(self):
            meta = dict(type="class", version=_version, module_src=self._orig_module_src,
                        class_name=self._orig_class_name, state=self.__getstate__())
            return _reconstruct_persistent_obj, (meta,)

    Decorator.__name__ = orig_class.__name__
    Decorator.__qualname__ = orig_class.__qualname__
    _decorators.add(Decorator)
    return Decorator


def _reconstruct_persistent_obj(meta):
    assert meta["version"] == _version and meta["type"] == "class"
    module = _src_to_module(meta["module_src"])
    cls = persistent_class(module.__dict__[meta["class_name"]])
    obj = cls.__new__(cls)
    obj.__setstate__(meta["state"])
    return obj


def _module_to_src(module):
    src = _module_to_src_dict.get(module)
    if src is None:
        src = inspect.getsource(module)
        _module_to_src_dict[module] = src
        _src_to_module_dict[src] = module
    return src


def _src_to_module(src):
    module = _src_to_module_dict.get(src)
    if module is None:
        module = types.ModuleType("_imported_module_" + uuid.uuid4().hex)
        sys.modules[module.__name__] = module
        _module_to_src_dict[module] = src
        _src_to_module_dict[src] = module
        exec(src, module.__dict__)  # noqa: S102 - this is what persistence does
    return module
'''

_BIAS_ACT = '''"""Stand-in torch_utils.ops.bias_act: the official dispatch, a reference op, and a
CUDA plugin that never builds (there are no CUDA sources here)."""

import numpy as np
import torch

_plugin = None
build_attempts = 0


def _init():
    global build_attempts
    build_attempts += 1
    raise RuntimeError("stand-in checkout: no CUDA sources to build bias_act_plugin from")


def bias_act(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None, impl="cuda"):
    assert impl in ["ref", "cuda"]
    if impl == "cuda" and x.device.type == "cuda" and _init():
        raise AssertionError("unreachable: the stand-in plugin never builds")
    return _bias_act_ref(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)


def _bias_act_ref(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None):
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    if act == "lrelu":
        x = torch.nn.functional.leaky_relu(x, 0.2 if alpha is None else alpha)
        gain = np.sqrt(2) if gain is None else gain
    elif act != "linear":
        raise ValueError(act)
    if gain is not None and gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x
'''

_NETWORKS = '''"""Stand-in StyleGAN networks: tiny and deterministic, with official names and signatures."""

import numpy as np
import torch
import torch.nn.functional as F

import dnnlib  # noqa: F401
import legacy  # noqa: F401  (StyleGAN-XL's network module imports legacy as well)
from torch_utils import misc, persistence
from torch_utils.ops import bias_act


def _randn(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(int(seed)))


def normalize_2nd_moment(x, dim=1, eps=1e-8):
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def modulated_conv2d(x, weight, styles, padding=0, demodulate=True):
    batch, in_ch, height, width = x.shape
    out_ch, _, kh, kw = weight.shape
    w = weight[None] * styles[:, None, :, None, None]
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    else:
        w = w / np.sqrt(in_ch * kh * kw)
    x = F.conv2d(x.reshape(1, batch * in_ch, height, width), w.reshape(batch * out_ch, in_ch, kh, kw),
                 padding=padding, groups=batch)
    return x.reshape(batch, out_ch, x.shape[2], x.shape[3])


@persistence.persistent_class
class FullyConnectedLayer(torch.nn.Module):
    def __init__(self, in_features, out_features, activation="linear", bias_init=0.0, seed=0):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = torch.nn.Parameter(_randn([out_features, in_features], seed))
        self.bias = torch.nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = 1 / np.sqrt(in_features)

    def forward(self, x):
        x = F.linear(x, self.weight * self.weight_gain)
        return bias_act.bias_act(x, self.bias, act=self.activation)


@persistence.persistent_class
class MappingNetwork(torch.nn.Module):
    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=2, class_gain=4.0, per_class_w_avg=True, seed=0,
                 embed_index=True):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers = num_layers
        self.class_gain = class_gain
        self.embed_index = embed_index
        if c_dim > 0 and embed_index:  # StyleGAN-XL: a table row per class, c.argmax(1)
            self.embed = torch.nn.Embedding(c_dim, z_dim)
            with torch.no_grad():
                self.embed.weight.copy_(_randn([c_dim, z_dim], seed + 1))
            self.embed_proj = FullyConnectedLayer(z_dim, z_dim, activation="lrelu", seed=seed + 2)
        elif c_dim > 0:  # StyleGAN2-ADA / StyleGAN3: a fully connected layer of the float label vector c
            self.embed = FullyConnectedLayer(c_dim, z_dim, seed=seed + 1)
        features = [z_dim * (2 if c_dim > 0 else 1)] + [w_dim] * num_layers
        for idx in range(num_layers):
            act = "lrelu" if idx < num_layers - 1 else "linear"
            setattr(self, f"fc{idx}", FullyConnectedLayer(features[idx], features[idx + 1], activation=act,
                                                          seed=seed + 10 + idx))
        if c_dim > 0 and per_class_w_avg:
            self.register_buffer("w_avg", torch.zeros([c_dim, w_dim]))
        else:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        misc.assert_shape(z, [None, self.z_dim])
        if truncation_cutoff is None:
            truncation_cutoff = self.num_ws
        x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            misc.assert_shape(c, [None, self.c_dim])
            if self.embed_index:
                y = normalize_2nd_moment(self.embed_proj(self.embed(c.argmax(1))))
            else:
                y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, self.class_gain * y], dim=1)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            centre = self.w_avg[c.argmax(1)].unsqueeze(1) if self.w_avg.ndim == 2 else self.w_avg.view(1, 1, -1)
            x[:, :truncation_cutoff] = centre.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x


@persistence.persistent_class
class SynthesisInput(torch.nn.Module):
    def __init__(self, w_dim, channels, size, sampling_rate, bandwidth, seed=0):
        super().__init__()
        self.w_dim, self.channels = w_dim, channels
        self.size = np.broadcast_to(np.asarray(size), [2])
        self.sampling_rate, self.bandwidth = sampling_rate, bandwidth
        freqs = _randn([channels, 2], seed)
        radii = 0.3 + 0.7 * torch.rand([channels, 1], generator=torch.Generator().manual_seed(seed + 1))
        self.register_buffer("freqs", freqs / freqs.norm(dim=1, keepdim=True) * radii * bandwidth)
        self.register_buffer("phases", torch.rand([channels], generator=torch.Generator().manual_seed(seed + 2)))
        self.weight = torch.nn.Parameter(_randn([channels, channels], seed + 3))
        self.affine = FullyConnectedLayer(w_dim, 2 + channels, seed=seed + 4)

    def forward(self, w):
        t = self.affine(w)
        shift = 0.25 * torch.tanh(t[:, :2])  # translation of the pattern, in image units
        phase = 0.5 * torch.tanh(t[:, 2:])
        width, height = int(self.size[0]), int(self.size[1])
        xs = (torch.arange(width, device=w.device) + 0.5 - width / 2) / self.sampling_rate
        ys = (torch.arange(height, device=w.device) + 0.5 - height / 2) / self.sampling_rate
        grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], dim=-1)  # [H, W, (x, y)]
        arg = (grid[None] - shift[:, None, None]) @ self.freqs.t() + self.phases + phase[:, None, None]
        x = torch.sin(2 * np.pi * arg) @ (self.weight / np.sqrt(self.channels)).t()
        x = x.permute(0, 3, 1, 2)
        misc.assert_shape(x, [w.shape[0], self.channels, height, width])
        return x


@persistence.persistent_class
class SynthesisLayer(torch.nn.Module):
    def __init__(self, w_dim, is_torgb, is_critically_sampled, in_channels, out_channels, in_size, out_size,
                 in_sampling_rate, out_sampling_rate, conv_kernel=3, seed=0):
        super().__init__()
        self.w_dim, self.is_torgb, self.is_critically_sampled = w_dim, is_torgb, is_critically_sampled
        self.in_channels, self.out_channels = in_channels, out_channels
        self.in_size = np.broadcast_to(np.asarray(in_size), [2])
        self.out_size = np.broadcast_to(np.asarray(out_size), [2])
        self.in_sampling_rate, self.out_sampling_rate = in_sampling_rate, out_sampling_rate
        self.conv_kernel = 1 if is_torgb else conv_kernel
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1, seed=seed)
        self.weight = torch.nn.Parameter(_randn([out_channels, in_channels, self.conv_kernel, self.conv_kernel], seed + 1))
        self.bias = torch.nn.Parameter(0.1 * _randn([out_channels], seed + 2))

    def forward(self, x, w, noise_mode="random", force_fp32=False, update_emas=False):
        assert noise_mode in ["random", "const", "none"]  # unused, as in StyleGAN3
        misc.assert_shape(x, [None, self.in_channels, int(self.in_size[1]), int(self.in_size[0])])
        m_in = (int(self.in_size[0]) - self.in_sampling_rate) // 2
        x = x[:, :, m_in:m_in + self.in_sampling_rate, m_in:m_in + self.in_sampling_rate]  # the image part
        if self.out_sampling_rate != self.in_sampling_rate:
            x = F.interpolate(x, size=(self.out_sampling_rate, self.out_sampling_rate), mode="bilinear",
                              align_corners=False)
        m_out = (int(self.out_size[0]) - self.out_sampling_rate) // 2
        if m_out:
            x = F.pad(x, [m_out] * 4, mode="replicate")
        x = modulated_conv2d(x, self.weight, self.affine(w), padding=self.conv_kernel // 2,
                             demodulate=not self.is_torgb)
        x = bias_act.bias_act(x, self.bias, act="linear" if self.is_torgb else "lrelu", clamp=256)
        misc.assert_shape(x, [None, self.out_channels, int(self.out_size[1]), int(self.out_size[0])])
        return x


@persistence.persistent_class
class SynthesisNetwork(torch.nn.Module):
    """StyleGAN3 / StyleGAN-XL layout."""

    def __init__(self, w_dim, img_resolution, img_channels, num_ws, channels=16, margin_size=10, seed=0):
        super().__init__()
        assert num_ws >= 4
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.num_ws = num_ws
        self.num_layers = num_ws - 2
        self.margin_size = margin_size
        n = self.num_layers
        start = max(4, img_resolution >> max(n - 2, 0))
        rates = [min(img_resolution, start * 2 ** i) for i in range(n + 1)]
        sizes = [r + 2 * margin_size for r in rates]
        sizes[-2:] = [img_resolution, img_resolution]
        chans = [channels] * n + [img_channels]
        self.input = SynthesisInput(w_dim, channels, rates[0] + 2 * margin_size, rates[0], rates[0] / 2,
                                    seed=seed)
        self.layer_names = []
        for idx in range(n + 1):
            prev = max(idx - 1, 0)
            in_size, in_rate = (self.input.size[0], rates[0]) if idx == 0 else (sizes[prev], rates[prev])
            layer = SynthesisLayer(w_dim, is_torgb=idx == n, is_critically_sampled=idx >= n - 2,
                                   in_channels=channels, out_channels=chans[idx], in_size=int(in_size),
                                   out_size=sizes[idx], in_sampling_rate=int(in_rate),
                                   out_sampling_rate=rates[idx], seed=seed + 100 * (idx + 1))
            name = f"L{idx}_{layer.out_size[0]}_{layer.out_channels}"
            setattr(self, name, layer)
            self.layer_names.append(name)

    def forward(self, ws, **layer_kwargs):
        misc.assert_shape(ws, [None, self.num_ws, self.w_dim])
        ws = ws.to(torch.float32).unbind(dim=1)
        x = self.input(ws[0])
        for name, w in zip(self.layer_names, ws[1:]):
            x = getattr(self, name)(x, w, **layer_kwargs)
        misc.assert_shape(x, [None, self.img_channels, self.img_resolution, self.img_resolution])
        return torch.tanh(0.5 * x).to(torch.float32)


@persistence.persistent_class
class SynthesisBlock(torch.nn.Module):
    """StyleGAN2-ADA layout: upsample, modulated conv + noise, skip ToRGB; returns (x, img)."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, seed=0):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.w_dim, self.resolution, self.img_channels = w_dim, resolution, img_channels
        self.num_conv, self.num_torgb = 1, 1
        if in_channels == 0:
            self.const = torch.nn.Parameter(_randn([out_channels, resolution, resolution], seed))
        self.affine = FullyConnectedLayer(w_dim, in_channels or out_channels, bias_init=1, seed=seed + 1)
        self.weight = torch.nn.Parameter(_randn([out_channels, in_channels or out_channels, 3, 3], seed + 2))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.register_buffer("noise_const", _randn([resolution, resolution], seed + 3))
        self.noise_strength = torch.nn.Parameter(torch.tensor(0.3))
        self.torgb_affine = FullyConnectedLayer(w_dim, out_channels, bias_init=1, seed=seed + 4)
        self.torgb_weight = torch.nn.Parameter(_randn([img_channels, out_channels, 1, 1], seed + 5))

    def forward(self, x, img, ws, force_fp32=False, fused_modconv=None, noise_mode="random", **layer_kwargs):
        misc.assert_shape(ws, [None, 2, self.w_dim])
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
        else:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = modulated_conv2d(x, self.weight, self.affine(ws[:, 0]), padding=1)
        if noise_mode == "random":
            x = x + self.noise_strength * torch.randn([x.shape[0], 1, self.resolution, self.resolution],
                                                      device=x.device)
        elif noise_mode == "const":
            x = x + self.noise_strength * self.noise_const
        x = bias_act.bias_act(x, self.bias, act="lrelu", clamp=256)
        y = modulated_conv2d(x, self.torgb_weight, self.torgb_affine(ws[:, 1]), demodulate=False)
        img = y if img is None else F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False) + y
        return x, img


@persistence.persistent_class
class BlockSynthesisNetwork(torch.nn.Module):
    def __init__(self, w_dim, img_resolution, img_channels, num_ws, channels=16, seed=0):
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.num_ws = num_ws
        self.block_resolutions = [2 ** i for i in range(2, int(np.log2(img_resolution)) + 1)]
        for idx, res in enumerate(self.block_resolutions):
            block = SynthesisBlock(0 if idx == 0 else channels, channels, w_dim, res, img_channels,
                                   seed=seed + 100 * (idx + 1))
            setattr(self, f"b{res}", block)

    def forward(self, ws, **block_kwargs):
        misc.assert_shape(ws, [None, self.num_ws, self.w_dim])
        ws = ws.to(torch.float32)
        x = img = None
        last = self.num_ws - 1
        for idx, res in enumerate(self.block_resolutions):
            block_ws = ws[:, [min(idx, last), min(idx + 1, last)]]
            x, img = getattr(self, f"b{res}")(x, img, block_ws, **block_kwargs)
        return torch.tanh(0.3 * img)


@persistence.persistent_class
class Generator(torch.nn.Module):
    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels=3, num_ws=6, variant="xl",
                 channels=16, margin_size=10, seed=0, w_avg_samples=256):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        if variant in ("xl", "sg3"):
            self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, num_ws, channels=channels,
                                              margin_size=margin_size, seed=seed + 1000)
        else:
            self.synthesis = BlockSynthesisNetwork(w_dim, img_resolution, img_channels, num_ws,
                                                   channels=channels, seed=seed + 1000)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, per_class_w_avg=variant == "xl",
                                      seed=seed, embed_index=variant == "xl")
        with torch.no_grad():  # what training's running average would have tracked
            classes = max(c_dim, 1)
            z = _randn([classes * w_avg_samples, z_dim], seed + 7)
            labels = torch.arange(classes).repeat_interleave(w_avg_samples)
            c = F.one_hot(labels, c_dim).float() if c_dim > 0 else torch.zeros([len(labels), 0])
            w = self.mapping(z, c)[:, 0]
            if self.mapping.w_avg.ndim == 2:
                self.mapping.w_avg.copy_(w.reshape(classes, w_avg_samples, w_dim).mean(dim=1))
            else:
                self.mapping.w_avg.copy_(w.mean(dim=0))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False, **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, **synthesis_kwargs)


@persistence.persistent_class
class Discriminator(torch.nn.Module):
    def __init__(self, c_dim, img_resolution, img_channels=3, seed=0):
        super().__init__()
        self.c_dim, self.img_resolution = c_dim, img_resolution
        self.conv = torch.nn.Conv2d(img_channels, 8, 3, stride=2, padding=1)
        self.fc = FullyConnectedLayer(8, max(c_dim, 1), seed=seed)

    def forward(self, img, c, **kwargs):
        return (self.fc(self.conv(img).mean(dim=[2, 3])) * c).sum(dim=1, keepdim=True)
'''

_BROKEN_D = f'''"""A discriminator whose module imports a package absent where the pickle is read,
as StyleGAN-XL's projected discriminator imports timm==0.4.12 and CLIP."""

import torch

import {MISSING_DEPENDENCY}  # noqa: F401
from torch_utils import persistence


@persistence.persistent_class
class ProjectedDiscriminator(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(4, 1)
'''

_MAKE_PICKLE = f'''"""Build a stand-in network pickle: python make_pickle.py OUT [--broken-d] [--seed N]"""

import copy
import json
import pickle
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import dnnlib  # noqa: E402


def main(argv):
    out = Path(argv[0])
    broken = "--broken-d" in argv
    seed = int(argv[argv.index("--seed") + 1]) if "--seed" in argv else 0
    cfg = json.loads((ROOT / "standin_config.json").read_text())
    from training import networks

    G_ema = networks.Generator(cfg["z_dim"], cfg["num_classes"], cfg["w_dim"], cfg["resolution"],
                               num_ws=cfg["num_ws"], variant=cfg["variant"], channels=cfg["channels"],
                               margin_size=cfg["margin_size"], seed=seed)
    G_ema.eval().requires_grad_(False)
    G = copy.deepcopy(G_ema)  # the non-averaged generator: different weights
    with torch.no_grad():
        for p in G.parameters():
            p.add_(1.0)
    G_ema.standin_role = "G_ema"
    G.standin_role = "G"
    if broken:
        sys.modules["{MISSING_DEPENDENCY}"] = types.ModuleType("{MISSING_DEPENDENCY}")
        from training.broken_discriminator import ProjectedDiscriminator

        D = ProjectedDiscriminator()
    else:
        D = networks.Discriminator(cfg["num_classes"], cfg["resolution"], seed=seed)
    kwargs = dnnlib.EasyDict(class_name="training.dataset.ImageFolderDataset", resolution=cfg["resolution"],
                             use_labels=cfg["num_classes"] > 0)
    data = dict(G=G, D=D, G_ema=G_ema, augment_pipe=None, training_set_kwargs=kwargs)
    with open(out, "wb") as f:
        pickle.dump(data, f)


if __name__ == "__main__":
    main(sys.argv[1:])
'''


def write_standin_repo(
    folder: Path,
    *,
    variant: Literal["xl", "sg3", "global"] = "xl",
    num_classes: int = 3,
    resolution: int = 32,
    z_dim: int = 16,
    w_dim: int = 16,
    num_ws: int = 6,
    channels: int = 16,
    margin_size: int = 10,
) -> Path:
    """Write a stand-in checkout into ``folder`` (created if needed); returns ``folder``.

    ``num_classes`` is the network's ``c_dim`` (0 = unconditional). The network's
    shape is stored in ``standin_config.json``, read by ``make_pickle.py``.
    """
    if variant not in ("xl", "sg3", "global"):
        raise ValueError(f"variant must be 'xl', 'sg3' or 'global', got {variant!r}")
    if resolution < 8 or resolution & (resolution - 1):
        raise ValueError("resolution must be a power of two >= 8")
    if num_ws < 4:
        raise ValueError("num_ws must be >= 4")
    folder = Path(folder)
    files = {
        "README.md": _README,
        "legacy.py": _LEGACY,
        "dnnlib/__init__.py": _DNNLIB_INIT,
        "dnnlib/util.py": _DNNLIB_UTIL,
        "torch_utils/__init__.py": "",
        "torch_utils/misc.py": _MISC,
        "torch_utils/persistence.py": _PERSISTENCE,
        "torch_utils/ops/__init__.py": "",
        "torch_utils/ops/bias_act.py": _BIAS_ACT,
        "training/__init__.py": "",
        "training/networks.py": _NETWORKS,
        "training/broken_discriminator.py": _BROKEN_D,
        "make_pickle.py": _MAKE_PICKLE,
        "standin_config.json": json.dumps(
            dict(
                variant=variant,
                num_classes=num_classes,
                resolution=resolution,
                z_dim=z_dim,
                w_dim=w_dim,
                num_ws=num_ws,
                channels=channels,
                margin_size=margin_size,
            ),
            indent=1,
        ),
    }
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


def write_standin_pickle(
    repo: Path, path: Path, *, with_broken_discriminator: bool = False, seed: int = 0
) -> Path:
    """Build the stand-in networks in a fresh Python process with ``repo`` importable and
    pickle ``{"G": G, "D": D, "G_ema": G_ema, "augment_pipe": None, "training_set_kwargs": ...}``
    to ``path`` (official key order: D is unpickled before G_ema). ``G`` has other
    weights than ``G_ema``; each carries ``standin_role``."""
    args = [sys.executable, str(Path(repo) / "make_pickle.py"), str(path), "--seed", str(seed)]
    if with_broken_discriminator:
        args.append("--broken-d")
    done = subprocess.run(args, cwd=repo, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"building the stand-in pickle failed:\n{done.stdout}\n{done.stderr}")
    return Path(path)
