#!/usr/bin/python3
"""Writes onnx/testdata/torch: NIN models built in PyTorch, exported with
torch.onnx.export, and PyTorch's own outputs on 64 random images, for the
import tests (TestTorchGoldens*), which run without PyTorch.

Models: the three presets (Caffe ceil pooling, ninbatch's tensor names),
a d2l.ai-style NiN (floor pooling, 224x224x1, 10 classes, d2l's Sequential
names 0.0.weight ...), a small net exported at several opsets, and a small
net with a Flatten + Linear ("classifier") head.

To keep the checkout small the weights are not stored. Every weight, bias
and input comes from splitmix64 streams that the Go test regenerates; the
.onnx files point at external data ("<name>.onnx.data") that the test
rebuilds from the manifest and checks by sha256 before importing. The
safetensors state dict (the layout safetensors.torch.save_file writes) is
stored as its header only, for the same reason.

Needs Debian's python3-torch, python3-onnx and python3-numpy:
    /usr/bin/python3 scripts/onnx-goldens.py
"""
import hashlib, json, math, os, struct, sys, tempfile
sys.dont_write_bytecode = True
import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "onnx", "testdata", "torch")
BATCH = 64


def splitmix(seed, n):
    i = np.arange(1, n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + i * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return z


def uniform(seed, n, bound):
    """float32 in [-bound, bound): (2u - 1) * bound with u = k / 2^24, exact but for the last product."""
    u = (splitmix(seed, n) >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)
    return (np.float32(2) * u - np.float32(1)) * np.float32(bound)


def images(seed, chw):
    """BATCH inputs unlike each other: noise scaled per image, plus a patch (a third of the image a side)
    at a place and with a brightness per image and channel. iid noise alone averages out in global average
    pooling, and every image would score alike."""
    c, h, w = chw
    x = uniform(seed, BATCH * c * h * w, 1.0).reshape(BATCH, c, h, w)
    scale = np.float32(1.25) + uniform(seed + 1, BATCH, 0.75)
    amp = uniform(seed + 2, BATCH * c, 2.0).reshape(BATCH, c)
    pos = splitmix(seed + 3, 2 * BATCH)
    ph, pw = max(1, h // 3), max(1, w // 3)
    for n in range(BATCH):
        x[n] *= scale[n]
        y0, x0 = int(pos[2 * n] % np.uint64(h - ph + 1)), int(pos[2 * n + 1] % np.uint64(w - pw + 1))
        for ch in range(c):
            x[n, ch, y0:y0 + ph, x0:x0 + pw] += amp[n, ch]
    return x


class Chain(nn.Module):
    """blocks: (k, s, p, channels, pool, dropout); pool = (kind, k, s) or None."""

    def __init__(self, cin, blocks, ceil, final_relu=True, softmax=True, names="ninbatch", view=False, fc=None):
        super().__init__()
        self.ceil, self.final_relu, self.softmax, self.names, self.view = ceil, final_relu, softmax, names, view
        self.fc = fc is not None
        if self.fc:  # an AlexNet-style head, as torchvision names it: flatten, dropout, classifier
            self.drop_fc, self.classifier = nn.Dropout(0.5), nn.Linear(*fc)
        self.layers = []  # (kind, module or fn) in order
        seq = []
        for b, (k, s, p, chans, pool, drop) in enumerate(blocks, 1):
            convs = []
            for i, c in enumerate(chans):
                convs.append(nn.Conv2d(cin, c, k if i == 0 else 1, stride=s if i == 0 else 1, padding=p if i == 0 else 0))
                cin = c
            if names == "ninbatch":
                setattr(self, f"mlpconv{b}", nn.ModuleList(convs))
                mods = []
            else:  # d2l: nn.Sequential(conv, ReLU, conv, ReLU, conv, ReLU) per block
                mods = [m for c in convs for m in (c, nn.ReLU())]
                seq.append(nn.Sequential(*mods))
            self.layers.append(("convs", convs))
            if pool:
                kind, pk, ps = pool
                pm = (nn.MaxPool2d(pk, ps, ceil_mode=ceil) if kind == "max"
                      else nn.AvgPool2d(pk, ps, ceil_mode=ceil, count_include_pad=False))
                self.layers.append(("pool", pm))
                if names != "ninbatch":
                    seq.append(pm)
            if drop:
                dm = nn.Dropout(drop)
                self.layers.append(("drop", dm))
                if names != "ninbatch":
                    seq.append(dm)
        # registered so that eval() reaches the pools and dropouts
        self.others = nn.ModuleList([m for kind, m in self.layers if kind != "convs"])
        if names != "ninbatch":
            seq += [nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten()]
            self.net = nn.Sequential(*seq)

    def forward(self, x):
        if self.names != "ninbatch":
            y = self.net(x)
            return torch.softmax(y, 1) if self.softmax else y
        nconv = sum(len(c) for kind, c in self.layers if kind == "convs")
        seen = 0
        for kind, m in self.layers:
            if kind == "convs":
                for c in m:
                    seen += 1
                    x = c(x)
                    if seen < nconv or self.final_relu:
                        x = F.relu(x)
            else:
                x = m(x)
        if self.fc:
            x = self.classifier(self.drop_fc(torch.flatten(x, 1)))
            return torch.softmax(x, 1) if self.softmax else x
        x = F.adaptive_avg_pool2d(x, 1)
        # x.view(x.size(0), -1) exports as Shape, Gather, Unsqueeze, Concat, Reshape
        x = x.view(x.size(0), -1) if self.view else torch.flatten(x, 1)
        return torch.softmax(x, 1) if self.softmax else x


PRESETS = {
    "nin-mnist": dict(input=(1, 28, 28), ceil=True, opset=11, blocks=[
        (5, 1, 2, (96, 64, 48), ("max", 3, 2), 0.5), (5, 1, 2, (128, 96, 48), ("max", 3, 2), 0.5),
        (5, 1, 2, (128, 96, 10), None, 0)]),
    "nin-cifar10": dict(input=(3, 32, 32), ceil=True, opset=13, blocks=[
        (5, 1, 2, (192, 160, 96), ("max", 3, 2), 0.5), (5, 1, 2, (192, 192, 192), ("ave", 3, 2), 0.5),
        (3, 1, 1, (192, 192, 10), None, 0)]),
    "nin-imagenet": dict(input=(3, 224, 224), ceil=True, opset=17, blocks=[
        (11, 4, 0, (96, 96, 96), ("max", 3, 2), 0), (5, 1, 2, (256, 256, 256), ("max", 3, 2), 0),
        (3, 1, 1, (384, 384, 384), ("max", 3, 2), 0.5), (3, 1, 1, (1024, 1024, 1000), None, 0)]),
    # d2l.ai chapter 8.3: nin_block(96, 11, 4, 0), MaxPool2d(3, 2), nin_block(256, 5, 1, 2), MaxPool2d(3, 2),
    # nin_block(384, 3, 1, 1), MaxPool2d(3, 2), Dropout(0.5), nin_block(10, 3, 1, 1), AdaptiveAvgPool2d, Flatten
    "d2l-nin": dict(input=(1, 224, 224), ceil=False, opset=17, names="d2l", softmax=False, blocks=[
        (11, 4, 0, (96, 96, 96), ("max", 3, 2), 0), (5, 1, 2, (256, 256, 256), ("max", 3, 2), 0),
        (3, 1, 1, (384, 384, 384), ("max", 3, 2), 0.5), (3, 1, 1, (10, 10, 10), None, 0)]),
    # small nets: inline weights, other ops and opsets
    "small-floor-nofinalrelu": dict(input=(1, 12, 12), ceil=False, opset=12, final_relu=False, inline=True, blocks=[
        (3, 1, 1, (8, 6), ("ave", 3, 2), 0.5), (3, 2, 0, (7, 5), None, 0)]),
    "small-view": dict(input=(3, 11, 11), ceil=True, opset=13, view=True, inline=True, blocks=[
        (3, 1, 0, (8, 6, 6), ("max", 3, 2), 0.5), (3, 1, 1, (6, 4), None, 0)]),
    # the fully connected head NIN replaces: Flatten + Linear over the 5x5x4 last map, exported as Flatten + Gemm
    "small-fc": dict(input=(1, 10, 10), ceil=True, opset=13, inline=True, fc=(5 * 5 * 4, 4), blocks=[
        (3, 1, 1, (8, 6), ("max", 3, 2), 0.5), (3, 1, 1, (6, 4), None, 0)]),
}


def fill(model):
    """Kaiming-uniform weights and small biases from per-tensor streams; returns the manifest entries."""
    tensors = []
    with torch.no_grad():
        items = list(model.state_dict().items())
        last = max(i for i, (_, p) in enumerate(items) if p.dim() > 1)
        for seed, (name, p) in enumerate(items, 1):
            fan_in = int(np.prod(p.shape[1:])) if p.dim() > 1 else 0
            bound = math.sqrt(6.0 / fan_in) if fan_in else 0.02
            if seed - 1 == last:
                bound *= 24  # class scores a few units apart, so the softmax is far from uniform
            v = uniform(seed, p.numel(), bound)
            if fan_in:
                # weights in +/- pairs: every row sums to 0 (but one odd entry), so the class scores follow the input
                # instead of the row sums (after ReLU every activation is positive)
                # (pairs half a row apart, so that they meet different input channels)
                r = v.reshape(p.shape[0], -1)
                half = r.shape[1] // 2
                r[:, half:2 * half] = -r[:, :half]
                v = r.ravel()
            v = v.reshape(tuple(p.shape))
            p.copy_(torch.from_numpy(v))
            tensors.append(dict(name=name, shape=list(p.shape), seed=seed, bound=float(np.float32(bound)), rows=int(p.shape[0]) if fan_in else 0,
                                values=v))
    return tensors


def safetensors_header(tensors):
    """The header safetensors.torch.save_file writes: entries sorted by (dtype, name), offsets in that order,
    padded with spaces to a multiple of 8."""
    hdr, off = {}, 0
    for t in sorted(tensors, key=lambda t: t["name"]):
        n = 4 * int(np.prod(t["shape"]))
        hdr[t["name"]] = {"dtype": "F32", "shape": t["shape"], "data_offsets": [off, off + n]}
        off += n
    b = json.dumps(hdr, separators=(",", ":")).encode()
    b += b" " * (-len(b) % 8)
    return b


def variants(m):
    """The small net with the same weights rewritten to the ops and opsets torch 1.13 does not write:
    Identity, Dropout with a ratio input, ReduceMean with axes as an attribute or (opset 18+) an input,
    Squeeze/Reshape heads and LogSoftmax."""
    from onnx import helper, numpy_helper

    def build(opset, head, drop_ratio_input):
        g = onnx.GraphProto()
        g.CopyFrom(m.graph)
        nodes = list(g.node)
        gap = next(i for i, n in enumerate(nodes) if n.op_type == "GlobalAveragePool")
        pool = next(i for i, n in enumerate(nodes) if n.op_type == "AveragePool")
        x = nodes[gap].input[0]
        extra = []
        # Identity after the first Relu, Dropout after the pool
        relu = nodes[1]
        nodes.insert(2, helper.make_node("Identity", [relu.output[0] + "_id"], [relu.output[0]], name="ident"))
        relu.output[0] = relu.output[0] + "_id"
        pool += 1
        gap += 1
        p = nodes[pool]
        if drop_ratio_input:
            extra.append(numpy_helper.from_array(np.array(0.3, dtype=np.float32), "drop_ratio"))
            d = helper.make_node("Dropout", [p.output[0] + "_pre", "drop_ratio"], [p.output[0]], name="drop")
        else:
            d = helper.make_node("Dropout", [p.output[0] + "_pre"], [p.output[0]], name="drop", ratio=0.3)
        p.output[0] = p.output[0] + "_pre"
        nodes.insert(pool + 1, d)
        gap += 1
        out = g.output[0].name
        nodes = nodes[:gap]
        nodes += head(x, out, extra)
        del g.node[:]
        g.node.extend(nodes)
        g.initializer.extend(extra)
        mm = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="onnx-goldens")
        mm.ir_version = 8 if opset <= 17 else 9 if opset <= 20 else 10
        return mm

    def head_attr(x, out, extra):  # opset < 18: ReduceMean axes attribute, Squeeze axes input (13+)
        extra.append(numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "sq_axes"))
        return [helper.make_node("ReduceMean", [x], ["mean"], name="gap", axes=[2, 3], keepdims=1),
                helper.make_node("Squeeze", ["mean", "sq_axes"], ["sq"], name="squeeze"),
                helper.make_node("Softmax", ["sq"], [out], name="softmax", axis=1)]

    def head_input(x, out, extra):  # opset 18+: ReduceMean axes input
        extra.append(numpy_helper.from_array(np.array([-1, -2], dtype=np.int64), "mean_axes"))
        extra.append(numpy_helper.from_array(np.array([0, -1], dtype=np.int64), "shape"))
        return [helper.make_node("ReduceMean", [x, "mean_axes"], ["mean"], name="gap", keepdims=0),
                helper.make_node("Reshape", ["mean", "shape"], ["flat"], name="reshape"),
                helper.make_node("LogSoftmax", ["flat"], [out], name="logsoftmax", axis=-1)]

    yield "small-opset13-reducemean", build(13, head_attr, True)
    yield "small-opset18-reshape", build(18, head_input, True)
    yield "small-opset21-reshape", build(21, head_input, True)


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, cfg in PRESETS.items():
        model = Chain(cfg["input"][0], cfg["blocks"], cfg["ceil"], cfg.get("final_relu", True),
                      cfg.get("softmax", True), cfg.get("names", "ninbatch"), cfg.get("view", False), cfg.get("fc")).eval()
        if cfg.get("names") == "d2l":
            model = model.net.eval()  # d2l's net is a bare nn.Sequential: tensors 0.0.weight, 0.2.weight, ...
        tensors = fill(model)
        x = images(9999, cfg["input"])
        with torch.no_grad():
            y = model(torch.from_numpy(x))
            probs = torch.softmax(y, 1) if not cfg.get("softmax", True) else y
        path = os.path.join(OUT, name + ".onnx")
        with tempfile.TemporaryDirectory() as tmp:
            raw = os.path.join(tmp, "m.onnx")
            torch.onnx.export(model, torch.from_numpy(x[:2]), raw, opset_version=cfg["opset"],
                              input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
            m = onnx.load(raw)
        entries = []
        if not cfg.get("inline"):
            onnx.save_model(m, path, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=name + ".onnx.data", size_threshold=0)
            m = onnx.load(path, load_external_data=False)
            data = open(path + ".data", "rb").read()
            os.remove(path + ".data")
            for init in m.graph.initializer:
                ext = {kv.key: kv.value for kv in init.external_data}
                off, n = int(ext.get("offset", 0)), int(ext["length"])
                chunk = np.frombuffer(data[off:off + n], dtype="<f4")
                match = [t for t in tensors if t["values"].size == chunk.size and
                         np.array_equal(t["values"].ravel(), chunk)]
                if not match:
                    sys.exit(f"{name}: initializer {init.name} matches no parameter")
                entries.append(dict(offset=off, seed=match[0]["seed"], count=int(chunk.size), bound=match[0]["bound"],
                                    rows=match[0]["rows"]))
            onnx_sha = hashlib.sha256(data).hexdigest()
            onnx_len = len(data)
        else:
            onnx.save_model(m, path)
            onnx_sha, onnx_len = "", 0
        hdr = safetensors_header(tensors)
        with open(os.path.join(OUT, name + ".safetensors.header"), "wb") as f:
            f.write(hdr)
        st = struct.pack("<Q", len(hdr)) + hdr + b"".join(
            t["values"].astype("<f4").tobytes() for t in sorted(tensors, key=lambda t: t["name"]))
        np.asarray(probs.numpy(), dtype="<f4").tofile(os.path.join(OUT, name + ".probs.f32"))
        manifest = dict(
            model=name, opset=cfg["opset"], input=list(cfg["input"]), batch=BATCH, input_seed=9999,
            classes=int(probs.shape[1]), torch=torch.__version__, onnx=onnx.__version__,
            tensors=[dict(name=t["name"], shape=t["shape"], seed=t["seed"], bound=t["bound"], rows=t["rows"])
                     for t in tensors],
            onnx_data=entries, onnx_data_bytes=onnx_len, onnx_data_sha256=onnx_sha,
            safetensors_sha256=hashlib.sha256(st).hexdigest())
        with open(os.path.join(OUT, name + ".json"), "w") as f:
            json.dump(manifest, f, indent=1)
            f.write("\n")
        if name == "small-floor-nofinalrelu":
            for vname, vm in variants(m):
                onnx.save_model(vm, os.path.join(OUT, vname + ".onnx"))
                with open(os.path.join(OUT, vname + ".json"), "w") as f:
                    json.dump(dict(manifest, model=vname, opset=vm.opset_import[0].version, base=name), f, indent=1)
                    f.write("\n")
                print(f"{vname}: opset {vm.opset_import[0].version}, {[n.op_type for n in vm.graph.node][-6:]}")
        print(f"{name}: opset {cfg['opset']}, {len(tensors)} tensors, {os.path.getsize(path)} bytes of graph")


if __name__ == "__main__":
    main()
