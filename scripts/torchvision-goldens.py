#!/usr/bin/python3
"""Writes io/testdata/torchvision: test pictures at, just below and just
above a model's input size, and what torchvision's Resize(R) +
CenterCrop(K) make of them (PIL bilinear, antialiased). TestShorterMatches
Torchvision compares ninbatch's "shorter" preprocessing with these.

Needs Debian's python3-pil and python3-torchvision:
    /usr/bin/python3 scripts/torchvision-goldens.py
"""
import json, math, os
from PIL import Image
import torchvision.transforms as T

out = os.path.join(os.path.dirname(__file__), "..", "io", "testdata", "torchvision")
os.makedirs(out, exist_ok=True)

def picture(w, h):
    # smooth gradients and a fine pattern, so resampling differences show
    im = Image.new("RGB", (w, h))
    px = im.load()
    for y in range(h):
        for x in range(w):
            r = int(127.5 + 127.5 * math.sin(x * 0.37 + y * 0.11))
            g = int(255 * x / max(1, w - 1))
            b = 255 if (x // 3 + y // 2) % 2 else int(255 * y / max(1, h - 1))
            px[x, y] = (r, g, b)
    return im

cases = []
# (resize_to, crop, sizes): nin-imagenet's 256/224, and a small geometry
for R, K, sizes in [(256, 224, [(224, 224), (223, 223), (225, 225), (300, 225), (224, 301)]),
                    (32, 28, [(28, 28), (27, 27), (29, 29), (40, 28), (29, 41), (33, 50), (51, 34), (31, 30)])]:
    tf = T.Compose([T.Resize(R, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(K)])
    for (w, h) in sizes:
        name = f"r{R}-c{K}-{w}x{h}"
        src = picture(w, h)
        src.save(os.path.join(out, name + ".in.png"))
        tf(src).save(os.path.join(out, name + ".want.png"))
        cases.append({"name": name, "resize_to": R, "crop": K})
with open(os.path.join(out, "cases.json"), "w") as f:
    json.dump(cases, f, indent=1)
print(len(cases), "cases in", out)
