"""linquant_helpers: the small, tested helper package of the linquant notebooks.

Read it in lesson order:

* :mod:`~linquant_helpers.affine`         - ranges, qparams, quantize, dequantize
* :mod:`~linquant_helpers.granularity`    - per-tensor, per-channel, per-group
* :mod:`~linquant_helpers.qtensor`        - codes and qparams kept together
* :mod:`~linquant_helpers.packing`        - several low-bit codes per byte
* :mod:`~linquant_helpers.metrics`        - how big the error is; embeddings compared
* :mod:`~linquant_helpers.plotting`       - the figures of lessons 01-02
* :mod:`~linquant_helpers.surgery`        - which layers to quantize, replacing them, hooks
* :mod:`~linquant_helpers.models`         - the digits CNN of lessons 04, 05 and 07
* :mod:`~linquant_helpers.observers`      - min-max, moving average, percentile, MSE, entropy
* :mod:`~linquant_helpers.weights`        - weight quantization of tensors and whole models
* :mod:`~linquant_helpers.calibration`    - calibrated activations, post-training quantization
* :mod:`~linquant_helpers.hardware`       - what this CPU does with int8: features, paths, rounding
* :mod:`~linquant_helpers.integer_ops`    - integer-only matmul and fixed-point requantization
* :mod:`~linquant_helpers.kernels`        - PyTorch's fused int8/int4 weight-only matmuls
* :mod:`~linquant_helpers.layers`         - W8A16, W8A8 and packed int4 linear layers
* :mod:`~linquant_helpers.qat`            - quantization-aware training (straight-through)
* :mod:`~linquant_helpers.sentence_model` - lesson 08's sentence model and its benchmark
* :mod:`~linquant_helpers.smoothquant`    - dynamic W8A8 activations and SmoothQuant
* :mod:`~linquant_helpers.gptq`           - GPTQ: error-compensating rounding (lesson 09)
* :mod:`~linquant_helpers.awq`            - AWQ-style activation-aware weight scaling (lesson 09)
* :mod:`~linquant_helpers.formats`        - FP4 E2M1, NF4 and k-means 4-bit grids (lesson 09)
* :mod:`~linquant_helpers.float8`         - FP8 E4M3, E5M2 and FP4 from their bits (lesson 11)
* :mod:`~linquant_helpers.block_scaled`   - MXFP8, MXFP4, NVFP4: a scale per block (lesson 11)
* :mod:`~linquant_helpers.gguf_blocks`    - llama.cpp's Q8_0 and Q4_0 blocks (lesson 10)
* :mod:`~linquant_helpers.kquants`        - llama.cpp's K-quants Q4_K and Q6_K, importance matrix
* :mod:`~linquant_helpers.gguf_matmul`    - llama.cpp's W4A8 matmul: Q8 activations, integer sums
* :mod:`~linquant_helpers.runtimes`       - torchao's words, ONNX Runtime's QDQ (lesson 10)
* :mod:`~linquant_helpers.outliers`       - LLM.int8(): outlier columns kept in float (lesson 12)
* :mod:`~linquant_helpers.rotations`      - Hadamard rotations that spread outliers (lesson 12)
* :mod:`~linquant_helpers.kv_cache`       - keys and values in a few bits; cache bytes (lesson 12)
* :mod:`~linquant_helpers.exercises`      - the automatic checks of the exercises

The course's own tools (running the notebooks, the site, the progress report, the
instructors' guide) live apart, in :mod:`linquant_helpers.course`, behind one
command: ``linquant run``, ``linquant site``, ``linquant progress``, ``linquant guide``.
"""

from .affine import (
    EPS,
    choose_qparams,
    code_dtype,
    dequantize,
    fake_quantize,
    qparams_from_range,
    qrange,
    quantize,
)
from .metrics import max_abs_error, mse, sqnr_db
from .packing import pack, packed_numel, unpack

# Lessons 04-05: models, observers, weights, calibration.
# isort: split
from .calibration import FakeQuantize, calibrate, ptq, with_input_quantizers
from .models import (
    DigitsCNN,
    DigitsData,
    accuracy,
    digits_cnn,
    evaluate,
    fold_batchnorm,
    load_digits_data,
    shipped_digits_cnn,
    train,
    trained_digits_model,
)
from .observers import (
    EntropyObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    Observer,
    PercentileObserver,
)
from .surgery import module_nbytes
from .weights import fake_quantize_weight, fake_quantize_weights

# Lessons 06-07: integer inference and quantized layers.
# isort: split
from .integer_ops import (
    int8_matmul,
    integer_linear,
    quantize_bias,
    quantize_multiplier,
    requantize,
    weight_offset,
)
from .layers import Int4WeightLinear, W8A8Linear, W8A16Linear, quantize_model
from .qat import QATWrapper, fake_quantize_ste, prepare_qat, strip_qat

# Lesson 08: no re-exports; `from linquant_helpers import sentence_model, smoothquant`
# (the sentence model needs the optional extra: python -m pip install -e ".[capstone]").

# Lesson 09: beyond round-to-nearest.
# isort: split
from .awq import AWQResult, awq_quantize_model, awq_scales, awq_search
from .formats import (
    dequantize_codebook,
    fake_quantize_codebook,
    fp4_e2m1_grid,
    kmeans_codebook,
    kmeans_error,
    nf4_grid,
    quantize_to_codebook,
)
from .gptq import (
    GPTQResult,
    HessianFactor,
    gptq_quantize,
    gptq_quantize_model,
    gptq_quantize_model_sequential,
    hessian,
    hessian_factor,
    layer_inputs,
    obq_update,
)

__version__ = "0.1.0"
