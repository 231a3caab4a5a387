using System.Formats.Tar;
using System.Text;
using Enclave.Operations.Registry;
using Enclave.Operations.Tests.Support;
using Enclave.Operations.Transfer;

namespace Enclave.Operations.Tests;

/// <summary>Offline transfer: export on one site, import on another, and every way a bundle can be refused.</summary>
public sealed class BundleTests
{
    [Fact]
    public void AnExportedBundleImportsOnAnotherSiteWithThePinnedKey()
    {
        using var dirs = new TempDir();
        var source = new ModelStore(dirs.Sub("site-a"));
        var target = new ModelStore(dirs.Sub("site-b"));
        StoreSeed.Install(source, "qwen");
        var bundle = Path.Combine(dirs.Path, "qwen.tar");
        var manifest = ModelBundle.Export(source, "qwen", bundle);
        var keyFile = Path.Combine(dirs.Path, "site-a.pub");
        File.WriteAllText(keyFile, "# comment\n" + ModelBundle.SigningKey(source.Home).PublicKey + "\n");

        var result = ModelBundle.Import(target, bundle, ModelBundle.ReadPublicKey(keyFile));

        Assert.True(result.KeyPinned);
        Assert.Equal(manifest.PublicKey, result.SignerPublicKey);
        Assert.Equal(source.Get("qwen").Files, target.Get("qwen").Files);
        Assert.Empty(target.Verify("qwen"));
        Assert.Equal("bundle:qwen.tar", target.Get("qwen").Source);
    }

    [Fact]
    public void ATamperedFileIsRefusedNamingItAndNothingIsInstalled()
    {
        using var dirs = new TempDir();
        var source = new ModelStore(dirs.Sub("a"));
        var target = new ModelStore(dirs.Sub("b"));
        StoreSeed.Install(source, "qwen");
        var bundle = Path.Combine(dirs.Path, "qwen.tar");
        ModelBundle.Export(source, "qwen", bundle);

        // Flip one byte inside config.json's data in the tar.
        var bytes = File.ReadAllBytes(bundle);
        var config = File.ReadAllBytes(Path.Combine(source.PathOf("qwen"), "config.json"));
        var at = bytes.AsSpan().IndexOf(config.AsSpan(0, 64));
        Assert.True(at > 0);
        bytes[at + 10] ^= 0x20;
        File.WriteAllBytes(bundle, bytes);

        var e = Assert.Throws<ModelIntegrityException>(() => ModelBundle.Import(target, bundle, ModelBundle.SigningKey(source.Home).PublicKey));
        Assert.Contains("file 'config.json' does not match the signed manifest", e.Message);
        Assert.Empty(target.List());
        Assert.False(Directory.Exists(target.PathOf("qwen")));
        Assert.False(Directory.Exists(target.StagingPath("qwen") + ".import"));
    }

    [Fact]
    public void AnAlteredManifestOrAForeignKeyFailsTheSignature()
    {
        using var dirs = new TempDir();
        var source = new ModelStore(dirs.Sub("a"));
        var target = new ModelStore(dirs.Sub("b"));
        StoreSeed.Install(source, "qwen");
        var bundle = Path.Combine(dirs.Path, "qwen.tar");
        ModelBundle.Export(source, "qwen", bundle);

        // Someone else's key: refused even though the bundle is intact.
        var stranger = ModelBundle.SigningKey(dirs.Sub("c")).PublicKey;
        var e = Assert.Throws<ModelIntegrityException>(() => ModelBundle.Import(target, bundle, stranger));
        Assert.Contains("not signed by the trusted key", e.Message);

        // Re-write the bundle with an edited manifest (a swapped hash) and the original signature.
        var forged = Path.Combine(dirs.Path, "forged.tar");
        using (var input = File.OpenRead(bundle))
        using (var reader = new TarReader(input))
        using (var output = File.Create(forged))
        using (var writer = new TarWriter(output, TarEntryFormat.Pax))
        {
            TarEntry? entry;
            while ((entry = reader.GetNextEntry(copyData: true)) is not null)
            {
                if (entry.Name == "manifest.json")
                {
                    var text = new StreamReader(entry.DataStream!).ReadToEnd();
                    var hash = source.Get("qwen").Files.First(f => f.Path == "config.json").Sha256;
                    entry.DataStream = new MemoryStream(Encoding.UTF8.GetBytes(text.Replace(hash, new string('0', 64), StringComparison.Ordinal)));
                }

                writer.WriteEntry(entry);
            }
        }

        var forgedError = Assert.Throws<ModelIntegrityException>(() => ModelBundle.Import(target, forged, null));
        Assert.Contains("signature does not verify", forgedError.Message);
        Assert.Empty(target.List());
    }

    [Fact]
    public void ExportRefusesAModelThatNoLongerVerifies()
    {
        using var dirs = new TempDir();
        var store = new ModelStore(dirs.Sub("a"));
        StoreSeed.Install(store, "qwen");
        File.AppendAllText(Path.Combine(store.PathOf("qwen"), "config.json"), " ");
        var e = Assert.Throws<ModelIntegrityException>(() => ModelBundle.Export(store, "qwen", Path.Combine(dirs.Path, "x.tar")));
        Assert.Contains("config.json", e.Message);
        Assert.False(File.Exists(Path.Combine(dirs.Path, "x.tar")));
    }
}
