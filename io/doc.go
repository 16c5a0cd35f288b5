// Package nbio is ninbatch's data layer (import path .../ninbatch/io):
// streaming Parquet and Arrow IPC readers and writers on arrow-go v18, image
// decoding and the one preprocessing implementation shared by run, eval and
// train, and dataset importers (MNIST idx, CIFAR-10 binary).
//
// It never imports package nin: the pipeline translates a model's
// preprocessing into a Preprocess value here.
package nbio
