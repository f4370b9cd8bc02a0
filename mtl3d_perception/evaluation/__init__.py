"""What training, ``mtl3d eval`` and replay measure and draw, in one place they all stand on: dataset-level
metrics (``metrics``) and the colourings and montages of predictions and labels (``montage``).

No model, data or training import: replay evaluates a bag without loading the trainer. Nothing is imported
here; import the modules.
"""
