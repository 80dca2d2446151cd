"""Classify photos with the shipped model, onnxruntime, numpy and Pillow only: classify.py shipped/ a.jpg b.png"""
import json, sys
import numpy as np, onnxruntime as ort
from PIL import Image, ImageOps

folder, paths = sys.argv[1], sys.argv[2:]
info = json.load(open(f"{folder}/model.json"))
session, size = ort.InferenceSession(f"{folder}/model.onnx", providers=["CPUExecutionProvider"]), info["image_size"]
for path in paths:
    img = Image.open(path)
    img.draft("RGB", (size, size))  # as training decoded it: JPEGs downscaled while decoding
    img = ImageOps.exif_transpose(img).convert("RGB").resize((size, size), Image.BILINEAR)
    x = ((np.asarray(img, np.float32) / 255 - info["mean"]) / info["std"]).transpose(2, 0, 1)[None]
    print(f"{path}\t{info['classes'][int(session.run(None, {'input': x.astype(np.float32)})[0].argmax())]}")
