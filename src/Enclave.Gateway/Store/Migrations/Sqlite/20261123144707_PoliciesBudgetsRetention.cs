using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace Enclave.Gateway.Store.Migrations.Sqlite
{
    /// <inheritdoc />
    public partial class PoliciesBudgetsRetention : Migration
    {
        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.AddColumn<long>(
                name: "PrunedAtMs",
                table: "audit_anchors",
                type: "INTEGER",
                nullable: true);

            migrationBuilder.CreateTable(
                name: "policies",
                columns: table => new
                {
                    Scope = table.Column<string>(type: "TEXT", maxLength: 8, nullable: false),
                    Subject = table.Column<string>(type: "TEXT", maxLength: 128, nullable: false),
                    AllowedCidrs = table.Column<string>(type: "TEXT", maxLength: 2048, nullable: true),
                    AllowedModels = table.Column<string>(type: "TEXT", maxLength: 2048, nullable: true),
                    RequestsPerMinute = table.Column<int>(type: "INTEGER", nullable: true),
                    TokensPerMinute = table.Column<int>(type: "INTEGER", nullable: true),
                    DailyTokenBudget = table.Column<long>(type: "INTEGER", nullable: true),
                    MonthlyTokenBudget = table.Column<long>(type: "INTEGER", nullable: true),
                    TimeWindows = table.Column<string>(type: "TEXT", maxLength: 512, nullable: true),
                    TimeZone = table.Column<string>(type: "TEXT", maxLength: 64, nullable: true),
                    PromptPiiAction = table.Column<string>(type: "TEXT", maxLength: 16, nullable: true),
                    AuditPiiAction = table.Column<string>(type: "TEXT", maxLength: 16, nullable: true),
                    BlockedPhrases = table.Column<string>(type: "TEXT", maxLength: 16384, nullable: true),
                    UpdatedAtMs = table.Column<long>(type: "INTEGER", nullable: false)
                },
                constraints: table =>
                {
                    table.PrimaryKey("PK_policies", x => new { x.Scope, x.Subject });
                });

            migrationBuilder.CreateTable(
                name: "token_usage",
                columns: table => new
                {
                    Counter = table.Column<string>(type: "TEXT", maxLength: 200, nullable: false),
                    Tokens = table.Column<long>(type: "INTEGER", nullable: false),
                    ExpiresAtMs = table.Column<long>(type: "INTEGER", nullable: false)
                },
                constraints: table =>
                {
                    table.PrimaryKey("PK_token_usage", x => x.Counter);
                });

            migrationBuilder.CreateIndex(
                name: "IX_token_usage_ExpiresAtMs",
                table: "token_usage",
                column: "ExpiresAtMs");
        }

        /// <inheritdoc />
        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.DropTable(
                name: "policies");

            migrationBuilder.DropTable(
                name: "token_usage");

            migrationBuilder.DropColumn(
                name: "PrunedAtMs",
                table: "audit_anchors");
        }
    }
}
