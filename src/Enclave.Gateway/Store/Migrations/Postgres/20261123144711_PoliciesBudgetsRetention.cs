using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace Enclave.Gateway.Store.Migrations.Postgres
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
                type: "bigint",
                nullable: true);

            migrationBuilder.CreateTable(
                name: "policies",
                columns: table => new
                {
                    Scope = table.Column<string>(type: "character varying(8)", maxLength: 8, nullable: false),
                    Subject = table.Column<string>(type: "character varying(128)", maxLength: 128, nullable: false),
                    AllowedCidrs = table.Column<string>(type: "character varying(2048)", maxLength: 2048, nullable: true),
                    AllowedModels = table.Column<string>(type: "character varying(2048)", maxLength: 2048, nullable: true),
                    RequestsPerMinute = table.Column<int>(type: "integer", nullable: true),
                    TokensPerMinute = table.Column<int>(type: "integer", nullable: true),
                    DailyTokenBudget = table.Column<long>(type: "bigint", nullable: true),
                    MonthlyTokenBudget = table.Column<long>(type: "bigint", nullable: true),
                    TimeWindows = table.Column<string>(type: "character varying(512)", maxLength: 512, nullable: true),
                    TimeZone = table.Column<string>(type: "character varying(64)", maxLength: 64, nullable: true),
                    PromptPiiAction = table.Column<string>(type: "character varying(16)", maxLength: 16, nullable: true),
                    AuditPiiAction = table.Column<string>(type: "character varying(16)", maxLength: 16, nullable: true),
                    BlockedPhrases = table.Column<string>(type: "character varying(16384)", maxLength: 16384, nullable: true),
                    UpdatedAtMs = table.Column<long>(type: "bigint", nullable: false)
                },
                constraints: table =>
                {
                    table.PrimaryKey("PK_policies", x => new { x.Scope, x.Subject });
                });

            migrationBuilder.CreateTable(
                name: "token_usage",
                columns: table => new
                {
                    Counter = table.Column<string>(type: "character varying(200)", maxLength: 200, nullable: false),
                    Tokens = table.Column<long>(type: "bigint", nullable: false),
                    ExpiresAtMs = table.Column<long>(type: "bigint", nullable: false)
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
