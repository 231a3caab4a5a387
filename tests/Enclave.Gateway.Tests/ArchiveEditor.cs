using System.IO.Compression;
using System.Text;

namespace Enclave.Gateway.Tests;

/// <summary>Edits an audit archive in place the way an attacker with file access would: decompress, change, recompress.</summary>
public static class ArchiveEditor
{
    public static List<string> Read(string file)
    {
        using var gz = new GZipStream(File.OpenRead(file), CompressionMode.Decompress);
        using var reader = new StreamReader(gz, Encoding.UTF8);
        return [.. reader.ReadToEnd().Split('\n', StringSplitOptions.RemoveEmptyEntries)];
    }

    public static void Rewrite(string file, Action<List<string>> edit)
    {
        var lines = Read(file);
        edit(lines);
        using var gz = new GZipStream(File.Create(file), CompressionLevel.Fastest);
        using var writer = new StreamWriter(gz, new UTF8Encoding(false));
        foreach (var line in lines)
        {
            writer.Write(line + "\n");
        }
    }
}
