"""Image geometry on tensors, below the models and runners: face alignment (``align``), RetinaFace / SCRFD
output decoding and NMS (``retinaface``), and the MTCNN cascade's box geometry (``mtcnn``)."""
