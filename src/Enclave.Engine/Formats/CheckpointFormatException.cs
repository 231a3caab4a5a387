namespace Enclave.Engine.Formats;

/// <summary>A checkpoint file or directory is missing, corrupt, or does not match the model config. The message names the file.</summary>
public sealed class CheckpointFormatException : Exception
{
    public CheckpointFormatException(string message)
        : base(message)
    {
    }

    public CheckpointFormatException(string message, Exception inner)
        : base(message, inner)
    {
    }
}
