"""Data stages: fetch real LVIS + COCO, synthesize an offline tiny LVIS, build LVIS subsets."""
