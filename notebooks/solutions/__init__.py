"""Reference solutions of the notebook exercises, one module per notebook.

Load them on purpose: ``from solutions.lesson01 import linear_quantize``.
"""
