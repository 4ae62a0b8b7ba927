"""How a pass proves its artifact: the faces it is judged and calibrated on (``calib``), the parity gates
against its parent and the torch model (``judge``), which nodes hold the error (``sensitivity``), and FP16
arithmetic emulated where onnxruntime's CPU would compute in FP32 (``fp16_emulate``)."""
