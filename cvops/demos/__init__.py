"""Command-line demos, one module per demo, each run as `python -m cvops.demos.<name>`:

style_transfer   train a multi-style TransformerNet briefly on synthetic images, save a grid
siamfc           track a target through a generated sequence of real pictures, save the success plot
                 and a strip of frames
deepface         train DeepFace's embedding with triplets on scikit-image's LFW faces, evaluate
                 verification with the LFW protocol, save the ROC plot and the measures
xnor_digits      train a small binary (XNOR) CNN on scikit-learn's 8×8 digits, report held-out
                 accuracy of the packed model
train_ddp        train any cvops model on synthetic data across processes (DDP or FSDP2; --nproc N
                 or torchrun), with a progress bar, and save a checkpoint one process loads
"""
